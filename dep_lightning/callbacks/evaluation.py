"""Generation-based validation metrics and the test run's ``metrics.json``.

:class:`GenerationEvaluator` generates for (a capped number of) validation samples every
N epochs and logs ``val/rouge1``, ``val/meteor``, ``val/bleu`` (and ``val/bertscore``), so
``ModelCheckpoint(monitor="val/meteor", mode="max")`` keeps the best checkpoint by METEOR
as the paper did. Metric states are synced across processes and deduplicated by sample id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L

from dep_lightning.callbacks.predictions import PredictionWriter, run_dir
from dep_lightning.metrics import TextMetrics, score_predictions


class GenerationEvaluator(L.Callback):
    """Logs generation metrics at the end of validation.

    Args:
        every_n_epochs: evaluate on epochs where ``(epoch + 1) % every_n_epochs == 0``.
        max_samples: cap on validation samples generated for (per process); ``None`` = all.
        bertscore: also compute BERTScore (slow on CPU).
    """

    def __init__(self, every_n_epochs: int = 1, max_samples: int | None = None, bertscore: bool = False):
        self.every_n_epochs, self.max_samples, self.bertscore = every_n_epochs, max_samples, bertscore
        self.metrics: TextMetrics | None = None
        self.seen = 0

    def _due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.metrics = TextMetrics(bertscore=self.bertscore) if self._due(trainer) else None
        self.seen = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.metrics is None or (self.max_samples is not None and self.seen >= self.max_samples):
            return
        texts = pl_module.generate(batch["prompt"], key=batch["sample_id"][0])
        self.metrics.update(texts, batch["reference"], ids=batch["sample_id"])
        self.seen += len(texts)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.metrics is None or self.seen == 0:
            return
        for name, value in self.metrics.compute().items():
            pl_module.log(f"val/{name}", float(value), sync_dist=False, prog_bar=name == "meteor")
        self.metrics = None


def config_hash(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """sha256 (16 hex) of the run's saved config.yaml, else of the model hyperparameters."""
    saved = run_dir(trainer) / "config.yaml"
    payload = saved.read_bytes() if saved.is_file() else json.dumps(dict(pl_module.hparams), sort_keys=True,
                                                                    default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def metrics_table(scores: dict[str, Any]) -> str:
    keys = [k for k in ("rouge1", "meteor", "bleu", "bertscore") if k in scores["overall"]]
    lines = ["| set | n | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    rows = [*sorted(scores["categories"].items()), ("overall", scores["overall"])]
    for name, values in rows:
        lines.append(f"| {name} | {values['n']} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines)


class TestMetricsWriter(PredictionWriter):
    """Writes predictions (see :class:`PredictionWriter`) and scores them into ``metrics.json``.

    ``metrics.json``: all metrics per category and overall, sample counts, backbone and
    config hash. The table is also printed.
    """

    def __init__(self, bertscore: bool = False):
        super().__init__()
        self.bertscore = bertscore
        self.scores: dict[str, Any] | None = None

    def _by_uniqueness(self, trainer) -> dict[str, Any] | None:
        """Overall metrics for the unique and the non-unique half of users (paper RQ4, figure 3)."""
        uniqueness_of = getattr(trainer.datamodule, "uniqueness", None)
        halves = uniqueness_of() if uniqueness_of is not None else None
        if halves is None:
            return None
        out = {}
        for name, keep in (("unique", lambda u: u in halves.unique), ("non_unique", lambda u: u not in halves.unique)):
            rows = [r for r in self.rows if keep(r["user_id"])]
            out[name] = score_predictions(rows, bertscore=self.bertscore)["overall"] if rows else {"n": 0}
        return out

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        super().on_test_epoch_end(trainer, pl_module)
        if not trainer.is_global_zero or not self.rows:
            return
        self.scores = score_predictions(self.rows, bertscore=self.bertscore)
        report = {**self.scores, "uniqueness": self._by_uniqueness(trainer),
                  "backbone": pl_module.hparams.get("backbone"),
                  "config_hash": config_hash(trainer, pl_module),
                  "predictions": str(self.paths[0]) if self.paths else None}
        path = Path(run_dir(trainer)) / "metrics.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print("\n" + metrics_table(self.scores) + f"\nmetrics: {path}")
