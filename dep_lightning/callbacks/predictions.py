"""Writes generated predictions of ``test`` / ``predict`` runs as JSON lines.

Rows from every process are gathered and deduplicated by sample id (a distributed
sampler pads shards by repeating samples), so each sample appears exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


def run_dir(trainer: L.Trainer) -> Path:
    """The run directory: the logger's version folder, else ``default_root_dir``."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def all_rows(trainer: L.Trainer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's rows, on every process (the rows themselves when there is one process)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[dict[str, Any]]] = [None] * trainer.world_size  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    return rows


def gather_rows(trainer: L.Trainer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = all_rows(trainer, rows)
    unique = {row["sample_id"]: row for row in rows}
    return [unique[k] for k in sorted(unique, key=_sample_order)]


def _sample_order(sample_id: str) -> tuple:
    category, split, index = sample_id.rsplit("/", 2)
    return category, split, int(index) if index.isdigit() else index


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


class PredictionWriter(L.Callback):
    """Collects the rows returned by ``test_step`` / ``predict_step`` and writes them.

    Files: ``<run_dir>/predictions/<stage>.jsonl`` (all rows) and
    ``<run_dir>/predictions/<stage>-<category>.jsonl`` (one per category).
    The last written rows stay in ``self.rows`` for callbacks that score them.
    """

    def __init__(self) -> None:
        self._buffer: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.folder: Path | None = None  # the run directory of the last write

    def _collect(self, outputs: Any) -> None:
        if outputs:
            self._buffer.extend(outputs)

    @staticmethod
    def scoring(pl_module) -> bool:
        """A likelihood-scoring test run (``dep-lightning score``): its rows are the ScoreWriter's."""
        return getattr(pl_module, "scoring_conditions", None) is not None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not self.scoring(pl_module):
            self._collect(outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(outputs)

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        self.rows = gather_rows(trainer, self._buffer)
        self._buffer = []
        self._write_rows(trainer, stage)

    def _write_rows(self, trainer: L.Trainer, stage: str) -> None:
        # trainer.log_dir is a collective under DDP: every process asks, only rank 0 writes.
        self.folder = run_dir(trainer)
        if not trainer.is_global_zero:
            return
        folder = self.folder / "predictions"
        self.paths = [folder / f"{stage}.jsonl"]
        write_jsonl(self.paths[0], self.rows)
        for category in sorted({row["category"] for row in self.rows}):
            path = folder / f"{stage}-{category}.jsonl"
            write_jsonl(path, [row for row in self.rows if row["category"] == category])
            self.paths.append(path)
        print(f"predictions: {self.paths[0]} ({len(self.rows)} samples)")

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.scoring(pl_module):
            self._write(trainer, "test")

    def on_predict_epoch_end(self, trainer, pl_module):
        self._write(trainer, "predict")
