"""A callback that slows training steps down, so a test can kill a run at a chosen step.

It changes no state: weights, data order and every logged value stay the same.
"""

import time

import lightning as L


class PauseAfterStep(L.Callback):
    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)
