"""What a test run records about its predictions: scores, output hygiene, the registry files.

:class:`ResultsRecorder` is the :class:`~dep_lightning.callbacks.predictions.PredictionsRecorder`
of a generating test run. The :class:`~dep_lightning.callbacks.predictions.PredictionWriter`
collects, resumes, gathers and writes the rows; the recorder

* adds to every row, before it is written, its per-sample ``scores`` and the hygiene fields
  (``metrics/hygiene.py``), so bootstrap intervals and paired tests can be recomputed from
  the predictions file alone (``results/``);
* once the rows are written (``test`` only), writes the run's registry files (docs/runs.md):

  - ``metrics.json``: all metrics per category and overall, sample counts, the hygiene
    summary, metrics by user-uniqueness half, backbone, config hash, the model's diagnostics;
  - ``manifest.json``: method, ablation keys, options, seed, backbone, data, code version,
    environment;
  - ``analysis/latents.npz``: per test sample, the mean refiner latent of its his slots
    (methods that record ``latents``);

  logs the manifest and the overall scores to every logger (and uploads the files to W&B),
  and prints the scores as a table.

:class:`TestMetricsWriter` is the callback configs name: a writer composed with a recorder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Sequence

import lightning as L
import numpy as np

from dep_lightning.atomic import atomic_open, write_json
from dep_lightning.callbacks.evaluation import build_manifest, metrics_table
from dep_lightning.callbacks.predictions import PredictionWriter, WrittenPredictions, config_hash
from dep_lightning.metrics import hygiene, per_sample_scores, score_predictions

#: The files a W&B run gets, so that tables can be rebuilt from W&B alone (``results/wandb_source.py``).
WANDB_FILES = ("manifest.json", "metrics.json", "predictions/test.jsonl")


def scores_by_uniqueness(rows: Sequence[dict[str, Any]], unique_users: Collection[str],
                         bertscore: bool = False) -> dict[str, Any]:
    """Overall metrics of the rows of the unique and of the non-unique half of users (paper
    RQ4, figure 3); a half without rows is ``{"n": 0}``."""
    out = {}
    for name, keep in (("unique", True), ("non_unique", False)):
        half = [row for row in rows if (row["user_id"] in unique_users) is keep]
        out[name] = score_predictions(half, bertscore=bertscore)["overall"] if half else {"n": 0}
    return out


def hygiene_line(summary: dict[str, Any]) -> str:
    return (f"hygiene: {summary['copy_rate']:.1%} copied >= {summary['copy_n']} words, mean longest copy "
            f"{summary['mean_longest_copy']:.1f}, {summary['limit_rate']:.1%} hit the token limit, "
            f"{summary['echo_rate']:.1%} echo the prompt")


def save_latents(path: Path, latents: Sequence[dict[str, Any]]) -> None:
    """``analysis/latents.npz`` from the model's per-sample records, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:  # a file object: np.savez would add .npz to a temporary name
        np.savez_compressed(handle, sample_id=np.array([r["sample_id"] for r in latents]),
                            user_id=np.array([r["user_id"] for r in latents]),
                            z=np.stack([r["z"] for r in latents]).astype(np.float32))


def log_to_loggers(trainer: L.Trainer, folder: Path, manifest: dict[str, Any], report: dict[str, Any]) -> None:
    """Manifest as hyperparameters and overall scores as ``test/*`` metrics in every logger;
    a W&B run also gets the registry files (:data:`WANDB_FILES`)."""
    overall = {f"test/{k}": float(v) for k, v in report["overall"].items() if k != "n"}
    overall.update({f"test/hygiene/{k}": float(v) for k, v in report["hygiene"].items()})
    for logger in trainer.loggers:
        logger.log_hyperparams({"manifest": manifest})
        logger.log_metrics(overall, step=trainer.global_step)
        if type(logger).__name__ == "WandbLogger":
            for name in WANDB_FILES:
                logger.experiment.save(str(folder / name), base_path=str(folder), policy="now")


class ResultsRecorder:
    """Scores a test run's predictions and writes its registry files (module docstring).

    Args:
        bertscore: also compute BERTScore (slow on CPU).
        copy_n: word-run length that counts as copied from the history.
    """

    def __init__(self, bertscore: bool = False, copy_n: int = hygiene.COPY_N):
        self.bertscore, self.copy_n = bertscore, copy_n
        self.report: dict[str, Any] | None = None  # the last metrics.json written

    def annotate(self, stage: str, rows: list[dict[str, Any]]) -> None:
        """Per-sample ``scores`` and hygiene fields on every row (``predict`` rows too)."""
        if not rows:
            return
        for row, values in zip(rows, per_sample_scores(rows, bertscore=self.bertscore)):
            row["scores"] = values
            hygiene.annotate(row, self.copy_n)

    def build_report(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     predictions: WrittenPredictions) -> dict[str, Any]:
        """``metrics.json`` of annotated rows (docs/runs.md)."""
        rows = predictions.rows
        uniqueness_of = getattr(trainer.datamodule, "uniqueness", None)
        halves = uniqueness_of() if uniqueness_of is not None else None
        report = {**score_predictions(rows, bertscore=self.bertscore),
                  "hygiene": hygiene.summarize(rows, self.copy_n),
                  "uniqueness": None if halves is None else scores_by_uniqueness(rows, halves.unique, self.bertscore),
                  "backbone": pl_module.hparams.get("backbone"),
                  "config_hash": config_hash(trainer, pl_module, predictions.folder),
                  "predictions": str(predictions.paths[0]) if predictions.paths else None}
        diagnostics = pl_module.diagnostics() if callable(getattr(pl_module, "diagnostics", None)) else {}
        if diagnostics:  # DEP: latent and soft-prompt scale (dep_module.py)
            report["diagnostics"] = diagnostics
        return report

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: WrittenPredictions) -> None:
        """The registry files, the loggers and the printed table of a test epoch's rows."""
        if predictions.stage != "test" or not predictions.rows:
            return
        folder = predictions.folder
        self.report = self.build_report(trainer, pl_module, predictions)
        write_json(folder / "metrics.json", self.report)
        manifest = build_manifest(trainer, pl_module, folder)
        write_json(folder / "manifest.json", manifest)
        log_to_loggers(trainer, folder, manifest, self.report)
        latents = getattr(pl_module, "latents", None)
        if latents:
            save_latents(folder / "analysis" / "latents.npz", latents)
        print("\n" + metrics_table(self.report) + "\n" + hygiene_line(self.report["hygiene"])
              + f"\nmetrics: {folder / 'metrics.json'}")


class TestMetricsWriter(PredictionWriter):
    """The callback of a generating test run: a :class:`PredictionWriter` whose rows a
    :class:`ResultsRecorder` scores and records (``self.results``).

    Args:
        bertscore: also compute BERTScore (slow on CPU).
        copy_n: word-run length that counts as copied from the history.
    """

    __test__ = False  # a callback, not a pytest test class

    def __init__(self, bertscore: bool = False, copy_n: int = hygiene.COPY_N):
        self.results = ResultsRecorder(bertscore=bertscore, copy_n=copy_n)
        super().__init__(recorder=self.results)
