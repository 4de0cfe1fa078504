"""A fit resumed after early stopping had already ended it (``fit --ckpt_path last``).

``fit`` tests and scores the best checkpoint once training ends; a run interrupted then is
rerun whole by ``make study``. Lightning restores EarlyStopping's state from the checkpoint
(its ``stopping_reason`` included) but not ``trainer.should_stop``, so the rerun would train
on until its next validation and stop there: steps trained again for nothing, and a later
step recorded as the one where the fit stopped. :class:`StoppedStaysStopped` ends such a fit
before its first step. ``DEPLightningCLI`` adds it to every resumed fit.

:class:`LastCheckpoint` writes the ``last.ckpt`` such a resume starts from, at every
validation and every N steps between.
"""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerFn


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


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` for ``fit --ckpt_path last``: after every validation, new best or not, and
    every ``every_n_train_steps`` optimizer steps between validations, so that a fit killed
    with its machine loses at most those steps (the resume is exact from any step:
    data/resumable.py). It keeps no other file.

    A plain ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` saves at most once per
    step: when a validation falls on a step it saved at (at the batch's end, before the
    validation), it skips the save after the validation, and ``last.ckpt`` then lacks that
    validation in the callbacks' states (early stopping's count, the best checkpoint), so a
    resume from it forgets one validation. (Without ``every_n_train_steps`` and with
    ``save_top_k=0`` it writes no last at a validation at all.) Here the save after a
    validation always happens.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None):
        # No version counter: a resumed fit writes last.ckpt again, not last-v1.ckpt beside it.
        super().__init__(dirpath=dirpath, monitor=None, save_last=True, save_top_k=0,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)

    def on_validation_end(self, trainer, pl_module) -> None:
        # ModelCheckpoint writes last here only when its top-k saved at this step (none here),
        # and never twice a step; this writes it after every validation of a fit.
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
