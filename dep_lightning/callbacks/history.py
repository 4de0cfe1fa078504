"""A run directory's logged history (``metrics.csv``) across the commands that write into it.

The CSV logger starts ``metrics.csv`` afresh whenever a command opens the directory. Two
cases would lose the learning curve: a ``test`` / ``score`` / … command after a fit
(:func:`keep_fit_history` moves the fit's file to ``metrics-fit.csv``), and a fit resumed
with ``--ckpt_path last`` (:func:`set_history_aside` and :class:`ResumedHistory` put the
rows logged before the checkpoint back). ``DEPLightningCLI`` calls them for ``--run_dir``.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback


def keep_fit_history(run_dir: str) -> None:
    """Keep a fit's ``metrics.csv`` when ``test`` / ``score`` / … later writes into its run directory.

    The CSV logger of the later command starts the file afresh and would erase the training
    curve; it is moved to ``metrics-fit.csv`` first (once: a later command leaves it alone)."""
    history, kept = Path(run_dir) / "metrics.csv", Path(run_dir) / "metrics-fit.csv"
    if history.is_file() and not kept.exists() and (Path(run_dir) / "checkpoints").is_dir():
        history.rename(kept)


HISTORY_ASIDE = "metrics-before-resume.csv"


def set_history_aside(run_dir: str) -> Path | None:
    """Move the ``metrics.csv`` of an interrupted fit aside before the fit resumes in ``run_dir``.

    The CSV logger deletes an existing ``metrics.csv`` when it starts, which would erase the
    learning curve up to the checkpoint; :class:`ResumedHistory` puts the rows back once the
    checkpoint's step is known. Rank 0 only (the only rank that writes the file). A file already
    aside is from a resume that stopped before it merged: it is the whole history and is kept
    (a ``metrics.csv`` beside it holds nothing logged after that resume's checkpoint was restored).
    Returns the file aside, or None when there is no history."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return None
    history, aside = Path(run_dir) / "metrics.csv", Path(run_dir) / HISTORY_ASIDE
    if aside.is_file():
        history.unlink(missing_ok=True)
        return aside
    if not history.is_file():
        return None
    history.rename(aside)
    return aside


class ResumedHistory(Callback):
    """Put an interrupted fit's logged rows (set aside by :func:`set_history_aside`) back into
    the resumed fit's ``metrics.csv``: the rows logged before the restored checkpoint. Rows
    logged after it come from steps the resumed fit trains again; they are dropped, and counted.

    Lightning labels a row with its count of optimizer steps (``_batches_that_stepped``) read
    before the current batch's step is counted: a training row of the N-th step reads N - 1,
    and so does a validation that batch triggers; a validation after a batch that only
    accumulated reads N. The resumed fit's count, once its loop has restored it (at its first
    batch or validation), is S: training rows before the checkpoint read less than S, those
    after it S or more; validation rows reading S are kept, which is right for the validation
    a checkpoint was saved at. (A later validation can read S too, if the run stopped after it
    and before its checkpoint was written; with ``save_last`` at every validation, as the
    study configures, that is the moment between the two.)
    """

    def __init__(self, aside: Path):
        self.aside = aside

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._merge(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._merge(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._merge(trainer)

    def _merge(self, trainer) -> None:
        import csv

        from lightning.pytorch.loggers import CSVLogger

        if not trainer.is_global_zero or not self.aside.is_file():
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)
                   and Path(lg.log_dir).resolve() == self.aside.parent.resolve()]
        if not loggers:
            raise ValueError(f"{self.aside}: no CSV logger writes {self.aside.parent} to put the history back into")
        with self.aside.open(newline="") as handle:
            rows = [{key: value for key, value in row.items() if value not in ("", None)}
                    for row in csv.DictReader(handle)]
        steps = trainer.fit_loop.epoch_loop._batches_that_stepped  # what the next row will read
        kept = [row for row in rows if int(row["step"]) < steps
                or (int(row["step"]) == steps and any(key.startswith("val/") for key in row))]
        writer = loggers[0].experiment
        writer.metrics[:0] = kept
        writer.save()
        self.aside.unlink()
        print(f"[fit] history: {len(kept)} row(s) logged before the checkpoint ({trainer.global_step} steps) kept "
              f"in {writer.metrics_file_path}; {len(rows) - len(kept)} logged after it are retrained", flush=True)
