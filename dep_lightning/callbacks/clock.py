"""Wall time of a run's stages, appended to ``<run dir>/timing.jsonl`` (one line per stage).

A study's cost is stated per optimizer step, per validation and per scored or generated
sample (docs/results.md); the numbers come from here, measured by the run itself:

    {"stage": "fit", "steps": 54, "seconds": 1291.0, "train_seconds": 1190.2, "seconds_per_step": 22.04,
     "validations": 1, "validation_seconds": 100.8, "global_step": 108, "step_limit": 872,
     "threads": 1, "device": "cpu", "cpu": "AMD EPYC", ...}
    {"stage": "test", "seconds": 277.0, "batches": 12, "samples": 96, ...}
    {"stage": "score", "seconds": 1800.5, "batches": 2607, "samples": 2607, ...}

Fit is written in segments: one line at the end of every validation (the steps and seconds
since the previous line, that validation included), one whenever a checkpoint is saved
between validations (``ModelCheckpoint(every_n_train_steps=N)``), and one at the end of
training for any steps after the last of those. A segment ends where a checkpoint can be:
a command killed mid-run loses only the steps after its last line, and ``--ckpt_path last``
resumes from a checkpoint saved where a line ended, so they are trained (and timed) again
after the resume. A resume from an older checkpoint (one not saved at every line) trains
recorded segments again; :func:`read_timing` drops the superseded lines, so summing what it
returns counts every step once. The sanity check
before training is in no line. Global rank zero writes; with several processes ``samples``
counts rank zero's share. ``cpu_seconds`` is the process's CPU time over the same span (all
its threads): a process that was paused (``kill -STOP``) or shared its cores shows wall
seconds well above CPU seconds / threads. ``DEPLightningCLI`` adds it to every trainer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

TIMING_FILE = "timing.jsonl"


def read_timing(run_dir: str | Path) -> list[dict]:
    """The lines of a run's ``timing.jsonl`` in order (none without the file), less the fit
    segments a resume trained again: a fit line covers the steps from ``global_step - steps``
    to ``global_step``; a later line starting before an earlier one's end means the run resumed
    from an earlier checkpoint, and the earlier lines past that start are dropped, so every
    step is counted once."""
    path = Path(run_dir) / TIMING_FILE
    if not path.is_file():
        return []
    kept: list[dict] = []
    for line in (json.loads(text) for text in path.read_text().splitlines() if text.strip()):
        if line.get("stage") == "fit" and "global_step" in line:
            start = line["global_step"] - line.get("steps", 0)
            kept = [k for k in kept if not (k.get("stage") == "fit" and k.get("global_step", -1) > start)]
        kept.append(line)
    return kept


def step_limit(trainer) -> dict:
    """``{"step_limit": N}``: the optimizer steps the fit runs at most (``max_steps``, else
    ``max_epochs`` of the training batches, accumulation counted), so a reader of the file knows
    how far the run has to go; ``{}`` when the fit has no such limit."""
    limit = trainer.estimated_stepping_batches
    return {"step_limit": int(limit)} if limit != float("inf") else {}


class RunClock(L.Callback):
    def __init__(self):
        self._fit: dict | None = None
        self._eval: dict | None = None

    # -- fit ------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._fit = {"start": time.perf_counter(), "cpu": time.process_time(), "step": trainer.global_step}

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._fit is not None and not trainer.sanity_checking:
            self._fit["validation_start"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._fit is not None and "validation_start" in self._fit:
            self._segment(trainer, pl_module, time.perf_counter() - self._fit.pop("validation_start"))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # A checkpoint saved between validations ends a segment, so that the steps a resume
        # from it keeps are in the file. Lightning runs checkpoint callbacks after the others:
        # at a validation this clock has already written its line, and the save finds no new
        # steps (nor does the second file of one save, last.ckpt after latest.ckpt).
        if self._fit is not None and "validation_start" not in self._fit \
                and trainer.global_step > self._fit["step"]:
            self._segment(trainer, pl_module, None)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._fit is not None and trainer.global_step > self._fit["step"]:
            self._segment(trainer, pl_module, None)
        self._fit = None

    def _segment(self, trainer, pl_module, validation: float | None) -> None:
        """Write the steps and seconds since the previous fit line; start the next segment."""
        now, cpu = time.perf_counter(), time.process_time()
        seconds, steps = now - self._fit["start"], trainer.global_step - self._fit["step"]
        train = seconds - (validation or 0.0)
        self._write(trainer, pl_module, {
            "stage": "fit", "steps": steps, "seconds": round(seconds, 3), "train_seconds": round(train, 3),
            "seconds_per_step": round(train / steps, 4) if steps else None,
            "validations": int(validation is not None), "validation_seconds": round(validation or 0.0, 3),
            "cpu_seconds": round(cpu - self._fit["cpu"], 3), "global_step": trainer.global_step,
            **step_limit(trainer)})
        self._fit = {"start": now, "cpu": cpu, "step": trainer.global_step}

    # -- test and score -------------------------------------------------------------------
    def on_test_start(self, trainer, pl_module) -> None:
        self._eval = {"start": time.perf_counter(), "cpu": time.process_time(), "batches": 0, "samples": 0,
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
        seconds, cpu = time.perf_counter() - run.pop("start"), time.process_time() - run.pop("cpu")
        cache = getattr(pl_module, "scored_inputs", None)
        if run["stage"] == "score" and hasattr(cache, "restored"):
            # Batches this command ran, and those an interrupted run of the same weights had
            # computed (scoring.ScoreCache) or other runs had (shared): the seconds are the first's alone.
            run |= {"batches_computed": cache.computed, "batches_restored": cache.restored}
            shared = getattr(pl_module, "shared_scores", None)
            if hasattr(shared, "hits"):  # taken from the scores runs share (scoring.ScoreWriter)
                run["batches_shared"] = shared.hits
        self._write(trainer, pl_module, {"stage": run.pop("stage"), "seconds": round(seconds, 3),
                                         "cpu_seconds": round(cpu, 3), **run})

    # -------------------------------------------------------------------------------------
    @staticmethod
    def _write(trainer, pl_module, record: dict) -> None:
        # Every process reads log_dir: under DDP it is a broadcast from rank zero, so rank zero
        # alone would wait for the others forever.
        log_dir = trainer.log_dir
        if not trainer.is_global_zero or log_dir is None:
            return
        from dep_lightning.models.backbone import cpu_model

        device = pl_module.device
        record |= {"threads": torch.get_num_threads(),
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                   "cpu": cpu_model(), "processes": trainer.world_size}
        path = Path(log_dir) / TIMING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
