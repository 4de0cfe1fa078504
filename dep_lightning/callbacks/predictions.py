"""Writes generated predictions of ``test`` / ``predict`` runs as JSON lines, batch by batch.

Generation is most of a run's cost, so nothing generated waits in memory for the end of
the epoch: every process appends the rows of each batch it finishes to its own part file
(``predictions/<stage>.rank<R>.jsonl.part``) and flushes and fsyncs it before taking the
next batch. Per-process files need no collective per batch (the processes run different
numbers of batches, so a gather per batch would hang) and no process ever writes into
another's file. At the end of the epoch the rows of every process are gathered, merged
with the rows carried over from an interrupted session and deduplicated by sample id
(padding repeats batches), rank 0 writes ``predictions/<stage>.jsonl`` atomically and
the part files are removed.

Resuming: ``predictions/<stage>.progress.json`` records what produced the rows (the
run's config hash and a fingerprint of the trainable weights). A rerun into the same run
directory with the same key reads the rows already written (the final file once the
epoch had ended, else the part files) and hands their sample ids to the DataModule,
which drops every batch all of whose samples are done. Skipping whole batches keeps
every remaining batch, and so its sampling seed (its first sample id), as it was.

What a run does with its rows beyond writing them (scores, ``metrics.json``, the
manifest: ``callbacks/recorder.py``) is a :class:`PredictionsRecorder` handed to the
writer. It sees the merged rows on rank 0 twice: before they are written, to add
per-sample fields the files should carry, and once they are written.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

import lightning as L
import torch

from dep_lightning.atomic import atomic_open, write_json
from dep_lightning.fingerprints import weights_fingerprint
from dep_lightning.journal import append_jsonl, drop_torn_tail, read_jsonl_prefix


def run_dir(trainer: L.Trainer) -> Path:
    """The run directory: the logger's version folder, else ``default_root_dir``."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def config_hash(trainer: L.Trainer, pl_module: L.LightningModule, folder: Path | None = None) -> str:
    """sha256 (16 hex) of the run's saved config.yaml, else of the model hyperparameters.

    Pass ``folder`` (the run directory) when calling on one process of a multi-process run:
    looking it up from the trainer is a collective."""
    saved = Path(folder or run_dir(trainer)) / "config.yaml"
    payload = saved.read_bytes() if saved.is_file() else json.dumps(dict(pl_module.hparams), sort_keys=True,
                                                                    default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def all_rows(trainer: L.Trainer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's rows, on every process (the rows themselves when there is one process)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[dict[str, Any]]] = [None] * trainer.world_size  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    return rows


def unique_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per sample id (the first seen wins), in sample order."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["sample_id"], row)
    return [unique[k] for k in sorted(unique, key=_sample_order)]


def gather_rows(trainer: L.Trainer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return unique_rows(all_rows(trainer, rows))


def _sample_order(sample_id: str) -> tuple:
    category, split, index = sample_id.rsplit("/", 2)
    return category, split, int(index) if index.isdigit() else index


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines, atomically (:mod:`dep_lightning.atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class WrittenPredictions:
    """The rows of one ``test`` / ``predict`` epoch as the writer wrote them."""

    stage: str  # "test" or "predict"
    folder: Path  # the run directory
    rows: list[dict[str, Any]]  # one per sample id, in sample order, the interrupted sessions' included
    paths: list[Path]  # predictions/<stage>.jsonl, then predictions/<stage>-<category>.jsonl per category


class PredictionsRecorder(Protocol):
    """What a :class:`PredictionWriter` hands each epoch's merged rows to, on rank 0 only.

    The rows are the whole file's (rows carried over from an interrupted session included),
    so what a recorder derives from them describes every sample, not just this session's.
    """

    def annotate(self, stage: str, rows: list[dict[str, Any]]) -> None:
        """Add fields to the rows, in place, before they are written (the files carry them)."""

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: WrittenPredictions) -> None:
        """Act on the rows once they are written."""


class PredictionWriter(L.Callback):
    """Writes the rows returned by ``test_step`` / ``predict_step`` as each batch ends, and
    resumes an interrupted ``test`` / ``predict`` (module docstring).

    Files: ``<run_dir>/predictions/<stage>.jsonl`` (all rows) and
    ``<run_dir>/predictions/<stage>-<category>.jsonl`` (one per category).
    The last written rows stay in ``self.rows``.

    Args:
        recorder: given each epoch's merged rows before and after they are written
            (:class:`PredictionsRecorder`); ``None`` writes the rows as the steps returned them.
    """

    def __init__(self, recorder: PredictionsRecorder | None = None) -> None:
        self.recorder = recorder
        self._buffer: list[dict[str, Any]] = []
        self._carried: list[dict[str, Any]] = []  # rank 0: rows of an interrupted session
        self._started = False
        self.rows: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.folder: Path | None = None  # the run directory of the last write

    @staticmethod
    def scoring(pl_module) -> bool:
        """A likelihood-scoring test run (``dep-lightning score``): its rows are the ScoreWriter's."""
        return getattr(pl_module, "scoring_conditions", None) is not None

    # -- files ----------------------------------------------------------------------------
    def _folder(self) -> Path:
        return Path(self.folder) / "predictions"

    def _part(self, stage: str, rank: int) -> Path:
        return self._folder() / f"{stage}.rank{rank}.jsonl.part"

    def _parts(self, stage: str) -> list[Path]:
        return sorted(self._folder().glob(f"{stage}.rank*.jsonl.part"))

    def _progress(self, stage: str) -> Path:
        return self._folder() / f"{stage}.progress.json"

    # -- session start: resume or start afresh ----------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn (a str enum)
        if stage not in ("test", "predict") or self.scoring(pl_module):
            return
        self.folder = run_dir(trainer)  # a collective under DDP: every process asks
        self._buffer, self._carried, self._started = [], [], False
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "test_resume"):
            # Called by the DataModule when it builds the loader: after the setup hooks, so the
            # run's config.yaml is the one of this command and the checkpoint's weights are loaded.
            datamodule.test_resume = functools.partial(self.start, trainer, pl_module, stage)

    def start(self, trainer, pl_module, stage: str) -> set[str]:
        """Open this session's files; the ids of the samples already predicted (every process).

        A collective under DDP (rank 0 decides and broadcasts): call it on every process."""
        done: list[str] = []
        if trainer.is_global_zero:
            done = self._open(trainer, pl_module, stage)
        done = trainer.strategy.broadcast(done, src=0)
        self._started = True
        drop_torn_tail(self._part(stage, trainer.global_rank))
        return set(done)

    def _open(self, trainer, pl_module, stage: str) -> list[str]:

        key = {"config_hash": config_hash(trainer, pl_module, self.folder), "weights": weights_fingerprint(pl_module)}
        path = self._progress(stage)
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        if {k: recorded.get(k) for k in key} == key:
            final = read_jsonl_prefix(self._folder() / f"{stage}.jsonl") if recorded.get("final") else []
            self._carried = unique_rows(final + [r for p in self._parts(stage) for r in read_jsonl_prefix(p)])
            if self._carried:
                print(f"predictions: resuming {stage} with {len(self._carried)} samples already in {self._folder()}")
            return [row["sample_id"] for row in self._carried]
        # Another config, other weights or no record: rows from before are not this session's.
        for part in self._parts(stage):
            part.unlink()
        write_json(path, {**key, "final": False})
        return []

    # -- per batch ------------------------------------------------------------------------
    def _collect(self, trainer, pl_module, outputs: Any, stage: str) -> None:
        if not self._started:  # a DataModule that cannot skip batches: start afresh here
            self.start(trainer, pl_module, stage)
        if outputs:
            self._buffer.extend(outputs)
            append_jsonl(self._part(stage, trainer.global_rank), list(outputs))

    def on_test_start(self, trainer, pl_module) -> None:
        if not self.scoring(pl_module) and not self._started:
            self.start(trainer, pl_module, "test")

    def on_predict_start(self, trainer, pl_module) -> None:
        if not self._started:
            self.start(trainer, pl_module, "predict")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not self.scoring(pl_module):
            self._collect(trainer, pl_module, outputs, "test")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(trainer, pl_module, outputs, "predict")

    # -- epoch end: merge, write, clean up ----------------------------------------------------
    def _merge(self, trainer: L.Trainer) -> None:
        """``self.rows``: carried rows and every process's rows of this session, once per sample."""
        self.rows = unique_rows(self._carried + all_rows(trainer, self._buffer))
        self._buffer, self._carried, self._started = [], [], False

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._merge(trainer)
        # trainer.log_dir is a collective under DDP: every process asks, only rank 0 writes.
        self.folder = run_dir(trainer)
        if not trainer.is_global_zero:
            return
        if self.recorder is not None:
            self.recorder.annotate(stage, self.rows)
        self._write_rows(stage)
        if self.recorder is not None:
            self.recorder.record(trainer, pl_module, WrittenPredictions(stage, Path(self.folder), self.rows,
                                                                        list(self.paths)))

    def _write_rows(self, stage: str) -> None:
        folder = self._folder()
        self.paths = [folder / f"{stage}.jsonl"]
        write_jsonl(self.paths[0], self.rows)
        for category in sorted({row["category"] for row in self.rows}):
            path = folder / f"{stage}-{category}.jsonl"
            write_jsonl(path, [row for row in self.rows if row["category"] == category])
            self.paths.append(path)
        self._finish(stage)
        print(f"predictions: {self.paths[0]} ({len(self.rows)} samples)")

    def _finish(self, stage: str) -> None:
        """Mark the final file complete, then remove the part files (all processes have
        written their last rows: they took part in the gather). A kill in between leaves
        rows in both places, which a resume unites."""

        path = self._progress(stage)
        if path.is_file():
            write_json(path, {**json.loads(path.read_text()), "final": True})
        for part in self._parts(stage):
            part.unlink()

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.scoring(pl_module):
            self._write(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "predict")
