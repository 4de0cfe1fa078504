"""Optuna pruning inside a trial's own ``dep-lightning fit`` process.

A sweep trial runs as a child process, so the sweep worker cannot hand it a callback
object. ``dep-lightning sweep --pruner median`` instead adds :class:`TrialPruning` to the
trial's command line (:func:`pruning_args`); the child connects to the study's storage,
reports the monitored metric after each validation and stops fit when the pruner says so.
It records the epoch in the trial's ``pruned_at_epoch`` user attribute, from which the
worker marks the trial PRUNED once the child has exited (the child never finishes a trial:
the worker that claimed it does).

Under DDP every rank builds the callback, only global rank 0 talks to the storage, and the
decision is broadcast so that all ranks stop at the same epoch.
"""

from __future__ import annotations

import json

import lightning as L

PRUNED_AT = "pruned_at_epoch"


def pruning_args(storage: str, study_name: str, trial_number: int, monitor: str, pruner: str) -> list[str]:
    """Command-line arguments that append :class:`TrialPruning` for one trial to ``trainer.callbacks``."""
    init = {"storage": storage, "study_name": study_name, "trial_number": trial_number, "monitor": monitor,
            "pruner": pruner}
    return ["--trainer.callbacks+=" + json.dumps({"class_path": f"{__name__}.TrialPruning", "init_args": init})]


class TrialPruning(L.Callback):
    """Report ``monitor`` to an Optuna trial after each validation; stop fit when it should be pruned."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str, pruner: str = "median"):
        self.storage, self.study_name, self.trial_number = storage, study_name, trial_number
        self.monitor, self.pruner = monitor, pruner
        self._trial = None

    def _connect(self):
        """The trial, opened on first use (rank 0 only: the other ranks never connect)."""
        if self._trial is None:
            import optuna

            from dep_lightning.sweeps.storage import make_pruner, make_storage

            storage = make_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner))
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
            self._trial = optuna.Trial(study, trial_id)
        return self._trial

    def _decide(self, trainer) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return False
        trial = self._connect()
        trial.report(float(value), step=trainer.current_epoch)
        if not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_AT, trainer.current_epoch)
        print(f"[sweep] trial {self.trial_number} pruned at epoch {trainer.current_epoch}: "
              f"{self.monitor} = {float(value):.4f}", flush=True)
        return True

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        prune = self._decide(trainer) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
