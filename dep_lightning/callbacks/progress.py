"""Plain-line progress for logs: what a progress bar shows, when nobody sees the bar.

Lightning's progress bars redraw one terminal line; written to a file (a sweep's log, a
batch job's stdout) they stay silent until the end. :class:`LogProgress` prints one line
every ``every_n_seconds`` per loop — batch, rate, ETA and the latest loss — and only when
stdout is not a terminal (``always=True`` prints in terminals too).
"""

from __future__ import annotations

import sys
import time

import lightning as L


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")


class LogProgress(L.Callback):
    """Prints ``[train] epoch 0 batch 12/24 (50%) 11.8 s/batch, eta 2m21s, train/loss 3.2104``
    (and ``[validate] epoch 0 …``, ``[test] batch …``, ``[score swap] batch …``, ``[predict] batch …``).

    Args:
        every_n_seconds: at most one line per loop this often (the last batch always prints).
        always: print even when stdout is a terminal.
    """

    def __init__(self, every_n_seconds: float = 30.0, always: bool = False):
        self.every, self.always = every_n_seconds, always
        self._start: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._before: dict[str, int] = {}  # batches of the loop done before its clock started

    def _active(self, trainer: L.Trainer) -> bool:
        # The process's own stdout: progress bars may swap sys.stdout for a proxy while they draw.
        stream = sys.__stdout__ or sys.stdout
        return trainer.is_global_zero and (self.always or not stream.isatty())

    def _begin(self, stage: str, done: int = 0) -> None:
        self._start[stage] = self._last[stage] = time.monotonic()
        self._before[stage] = done

    def _report(self, trainer: L.Trainer, stage: str, done: int, total, extra: str = "") -> None:
        now = time.monotonic()
        last = isinstance(total, int) and done >= total
        if not self._active(trainer) or (now - self._last.get(stage, now) < self.every and not last):
            return
        self._last[stage] = now
        elapsed = now - self._start.get(stage, now)
        rate = elapsed / max(done - self._before.get(stage, 0), 1)
        if isinstance(total, int) and total > 0:
            position = f"{done}/{total} ({done / total:.0%}) {rate:.1f} s/batch, eta {_duration(rate * (total - done))}"
        else:
            position = f"{done} {rate:.1f} s/batch"
        epoch = f" epoch {trainer.current_epoch}" if stage in ("train", "validate") else ""
        print(f"[{stage}]{epoch} batch {position}{extra}", flush=True)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._begin("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "train" not in self._start:
            # A fit resumed mid-epoch: Lightning does not call on_train_epoch_start for the
            # epoch it resumes in, so the clock starts here, after the batches done before.
            self._begin("train", batch_idx + 1)
            return
        loss = trainer.callback_metrics.get("train/loss")
        extra = f", train/loss {float(loss):.4f}" if loss is not None else ""
        self._report(trainer, "train", batch_idx + 1, trainer.num_training_batches, extra)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._begin("validate")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            total = trainer.num_val_batches[dataloader_idx] if trainer.num_val_batches else None
            self._report(trainer, "validate", batch_idx + 1, total)

    @staticmethod
    def _test_stage(pl_module) -> str:
        # DEPTrainer.score runs the test loop, one dataloader per condition.
        return "score" if getattr(pl_module, "scoring_conditions", None) else "test"

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._begin(self._test_stage(pl_module))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        total = trainer.num_test_batches[dataloader_idx] if trainer.num_test_batches else None
        stage = self._test_stage(pl_module)
        if stage == "score":
            conditions = pl_module.scoring_conditions
            stage = f"score {conditions[dataloader_idx]}" if dataloader_idx < len(conditions) else stage
            if batch_idx == 0:
                self._begin(stage)
        self._report(trainer, stage, batch_idx + 1, total)

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._begin("predict")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        total = trainer.num_predict_batches[dataloader_idx] if trainer.num_predict_batches else None
        self._report(trainer, "predict", batch_idx + 1, total)
