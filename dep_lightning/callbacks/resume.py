"""A fit resumed after early stopping had already ended it (``fit --ckpt_path last``).

``fit`` tests and scores the best checkpoint once training ends; a run interrupted then is
rerun whole by ``make study``. Lightning restores EarlyStopping's state from the checkpoint
(its ``stopping_reason`` included) but not ``trainer.should_stop``, so the rerun would train
on until its next validation and stop there: steps trained again for nothing, and a later
step recorded as the one where the fit stopped. :class:`StoppedStaysStopped` ends such a fit
before its first step. ``DEPLightningCLI`` adds it to every resumed fit.
"""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason


class StoppedStaysStopped(Callback):
    """End a resumed fit at once when its checkpoint was saved after early stopping fired."""

    def on_train_start(self, trainer, pl_module) -> None:
        stopped = [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)
                   and cb.stopping_reason != EarlyStoppingReason.NOT_STOPPED]
        if stopped:
            trainer.should_stop = True
            reason = stopped[0].stopping_reason_message or stopped[0].stopping_reason.value
            print(f"[fit] the checkpoint was saved when early stopping ended the fit at step {trainer.global_step} "
                  f"({reason.strip()}); nothing is trained again", flush=True)
