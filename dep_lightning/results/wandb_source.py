"""Runs read from a W&B project instead of run directories (``tables --wandb ENTITY/PROJECT``).

A dep-lightning test run logged to W&B carries the registry in three places: the run
config holds the manifest under ``manifest``; the summary holds the overall metrics as
``test/<metric>`` and ``test/hygiene/<metric>``; and the files ``manifest.json``,
``metrics.json`` and ``predictions/test.jsonl`` are uploaded with the run. Per-category
cells and intervals need the uploaded files; without them only overall metrics exist.

Reading needs the W&B server (network and ``wandb login``); offline runs are synced with
``wandb sync`` first, or read from their run directories with ``--runs``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dep_lightning.data.errors import InputError
from dep_lightning.results.registry import (
    HYGIENE_METRICS,
    PREDICTIONS,
    QUALITY_METRICS,
    Registry,
    Run,
    _is_number,
    read_json,
    read_predictions,
    validate_manifest,
    validate_metrics,
)

REGISTRY_FILES = ("metrics.json", PREDICTIONS.as_posix())


@dataclass
class WandbRunData:
    """What the tables need from one W&B run: config, summary and downloaded registry files."""

    path: str  # entity/project/run_id
    config: Mapping[str, Any]
    summary: Mapping[str, Any]
    files: dict[str, Path] = field(default_factory=dict)  # name in the run -> local copy


def _metrics_from_summary(summary: Mapping[str, Any], where: str) -> dict:
    overall, hygiene = {}, {}
    for metric in QUALITY_METRICS:
        if f"test/{metric}" in summary:
            overall[metric] = summary[f"test/{metric}"]
    for metric in HYGIENE_METRICS:
        if f"test/hygiene/{metric}" in summary:
            hygiene[metric] = summary[f"test/hygiene/{metric}"]
    if not overall:
        raise InputError(where, None, "summary.test/meteor", None, "missing field",
                         "no test/<metric> values: the run has no test results")
    for name, block in (("test", overall), ("test/hygiene", hygiene)):
        for metric, value in block.items():
            if not _is_number(value):
                raise InputError(where, None, f"summary.{name}/{metric}", value, "wrong type",
                                 "expected a finite number")
    # Sample counts are not logged to the summary; nothing downstream reads them.
    return {"categories": {}, "overall": overall, "hygiene": hygiene or None, "uniqueness": None}


def run_from_wandb(data: WandbRunData) -> Run:
    """The registry record of one W&B run."""
    where = f"W&B run {data.path}"
    if "manifest" not in data.config:
        raise InputError(where, None, "config.manifest", None, "missing field",
                         "not a dep-lightning test run (its config has no manifest)")
    manifest = validate_manifest(data.config["manifest"], f"{where} (config.manifest)")
    notes = []
    if "metrics.json" in data.files:
        path = data.files["metrics.json"]
        metrics = validate_metrics(read_json(path), str(path))
    else:
        metrics = _metrics_from_summary(data.summary, f"{where} (summary)")
        notes.append(f"{where}: metrics.json not uploaded; only overall metrics from the summary (no per-category "
                     "cells)")
    run = Run(where, manifest, metrics, notes=notes)
    predictions = data.files.get(PREDICTIONS.as_posix())
    if predictions is not None:
        run.samples = read_predictions(predictions)
    else:
        notes.append(f"{where}: {PREDICTIONS} not uploaded; no intervals or tests for this run")
    return run


def load_wandb_registry(project: str, download_dir: str | Path | None = None) -> Registry:
    """Every run of ``ENTITY/PROJECT`` that carries a manifest (others are listed in the notes)."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise InputError("--wandb", None, None, project, "bad project path", "expected ENTITY/PROJECT")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_OFFLINE", "").lower() in ("1", "true"):
        raise InputError("--wandb", None, "WANDB_MODE", mode or "offline", "W&B is offline",
                         "reading runs from W&B needs the server; sync offline runs with `wandb sync` or pass "
                         "their run directories with --runs")
    import wandb

    try:
        api = wandb.Api(timeout=30)
        api_runs = list(api.runs(project))
    except Exception as exc:  # the W&B client raises many types for network / auth problems
        raise InputError("--wandb", None, None, project, "W&B unreachable",
                         f"{type(exc).__name__}: {exc}; needs network access and `wandb login`, or pass run "
                         "directories with --runs") from None
    root = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="dep_lightning_wandb_"))
    runs, notes = [], []
    for api_run in api_runs:
        path = "/".join(api_run.path)
        if "manifest" not in api_run.config:
            notes.append(f"W&B run {path}: no manifest in its config (not a dep-lightning test run); skipped")
            continue
        folder = root / api_run.id
        files = {}
        for remote in api_run.files(names=list(REGISTRY_FILES)):
            if remote.name in REGISTRY_FILES:
                remote.download(root=str(folder), replace=True)
                files[remote.name] = folder / remote.name
        runs.append(run_from_wandb(WandbRunData(path, dict(api_run.config), dict(api_run.summary_metrics), files)))
    return Registry(runs, notes)
