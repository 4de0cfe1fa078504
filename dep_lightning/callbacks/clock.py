"""Wall time of a run's stages, appended to ``<run dir>/timing.jsonl`` (one line per stage per command).

A study's cost is stated per optimizer step, per validation and per scored or generated
sample (docs/results.md); the numbers come from here, measured by the run itself:

    {"stage": "fit", "steps": 54, "seconds": 1291.0, "train_seconds": 1190.2, "seconds_per_step": 22.04,
     "validations": 1, "validation_seconds": 100.8, "threads": 1, "device": "cpu", "cpu": "AMD EPYC"}
    {"stage": "test", "seconds": 277.0, "batches": 12, "samples": 96, ...}
    {"stage": "score", "seconds": 1800.5, "batches": 2607, "samples": 2607, ...}

A ``fit`` line covers the steps of that command only: a fit resumed from a checkpoint writes a
second line with its own steps (a command killed before its end writes none, and its steps are
trained again after the resume). Validation inside fit is timed apart from training; the sanity
check before it is in neither. Global rank zero writes; with several processes ``samples``
counts rank zero's share. ``DEPLightningCLI`` adds it to every trainer (``trainer_defaults``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

TIMING_FILE = "timing.jsonl"


class RunClock(L.Callback):
    def __init__(self):
        self._fit: dict | None = None
        self._eval: dict | None = None

    # -- fit ------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._fit = {"start": time.perf_counter(), "step": trainer.global_step, "validations": 0,
                     "validation_seconds": 0.0}

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._fit is not None and not trainer.sanity_checking:
            self._fit["validation_start"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._fit is not None and "validation_start" in self._fit:
            self._fit["validation_seconds"] += time.perf_counter() - self._fit.pop("validation_start")
            self._fit["validations"] += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self._fit is None:
            return
        fit, self._fit = self._fit, None
        seconds = time.perf_counter() - fit["start"]
        steps = trainer.global_step - fit["step"]
        train = seconds - fit["validation_seconds"]
        self._write(trainer, pl_module, {
            "stage": "fit", "steps": steps, "seconds": round(seconds, 3), "train_seconds": round(train, 3),
            "seconds_per_step": round(train / steps, 4) if steps else None,
            "validations": fit["validations"], "validation_seconds": round(fit["validation_seconds"], 3)})

    # -- test and score -------------------------------------------------------------------
    def on_test_start(self, trainer, pl_module) -> None:
        self._eval = {"start": time.perf_counter(), "batches": 0, "samples": 0,
                      "stage": "score" if getattr(pl_module, "scoring_conditions", None) else "test"}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._eval is not None:
            self._eval["batches"] += 1
            ids = getattr(batch, "sample_id", None)
            self._eval["samples"] += len(ids) if ids is not None else 0

    def on_test_end(self, trainer, pl_module) -> None:
        if self._eval is None:
            return
        run, self._eval = self._eval, None
        seconds = time.perf_counter() - run.pop("start")
        self._write(trainer, pl_module, {"stage": run.pop("stage"), "seconds": round(seconds, 3), **run})

    # -------------------------------------------------------------------------------------
    @staticmethod
    def _write(trainer, pl_module, record: dict) -> None:
        if not trainer.is_global_zero or trainer.log_dir is None:
            return
        from dep_lightning.models.backbone import cpu_model

        device = pl_module.device
        record |= {"threads": torch.get_num_threads(),
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                   "cpu": cpu_model(), "processes": trainer.world_size}
        path = Path(trainer.log_dir) / TIMING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
