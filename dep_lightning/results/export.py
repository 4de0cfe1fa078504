"""``dep-lightning export``: copy run directories without their checkpoints, for sharing.

What ``dep-lightning tables`` and a reader need from a run, and nothing else: the
manifest, metrics, resolved configuration, logged metric history, predictions with their
per-sample scores, per-sample likelihoods (``scores/``, from ``dep-lightning score``),
analysis files (SAE latents), the grid point record and the stages' wall times
(``timing.jsonl``). Checkpoints,
W&B folders and anything else stay behind; the copy is laid out like the source (the
path of each run relative to its ``--runs`` root), so tables regenerate from the copy
exactly as from the originals.

A run not finished yet is left out, with a note: one a live ``dep-lightning grid`` holds (its
point's lock), and one whose configuration scores after the fit (``score_after_fit``) and
whose ``metrics.json`` has no likelihood block yet (the test wrote it; scoring was under way
or was interrupted).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from dep_lightning.results.registry import find_run_dirs
from dep_lightning.runlock import lock_owner

# Files of a run directory that are exported (relative paths; folders take the listed suffixes).
FILES = ("manifest.json", "metrics.json", "config.yaml", "hparams.yaml", "metrics.csv", "metrics-fit.csv", "point.json",
         "timing.jsonl")
FOLDERS = {"predictions": (".jsonl",), "scores": (".jsonl",), "analysis": (".npz", ".json")}


def run_files(run: Path) -> list[Path]:
    """The exported files of one run directory, relative to it."""
    files = [Path(name) for name in FILES if (run / name).is_file()]
    for folder, suffixes in FOLDERS.items():
        if (run / folder).is_dir():
            files += sorted(p.relative_to(run) for p in (run / folder).iterdir()
                            if p.is_file() and p.suffix in suffixes)
    return files


def unfinished(run: Path) -> str | None:
    """Why ``run`` is not finished (see the module's docstring), else None."""
    owner = lock_owner(run)
    if owner is not None:
        return f"a grid (pid {owner}) is running it now"
    config = run / "config.yaml"
    conditions = (yaml.safe_load(config.read_text()) or {}).get("score_after_fit") if config.is_file() else None
    if conditions and "likelihood" not in json.loads((run / "metrics.json").read_text()):
        return "scores after its fit and has no likelihood block yet (scoring under way or interrupted)"
    return None


def export_runs(roots: list[str], out: str) -> list[Path]:
    """Copy every run under ``roots`` to ``out`` (relative layout kept); returns the copies' folders."""
    target_root = Path(out)
    exported = []
    for root in roots:
        runs, notes = find_run_dirs([root])
        for note in notes:
            print(f"export: {note}")
        base = Path(root) if Path(root).is_dir() else Path(root).parent
        for run in runs:
            reason = unfinished(run)
            if reason is not None:
                print(f"export: {run}: not finished, {reason}; skipped")
                continue
            relative = run.relative_to(base)
            if relative == Path("."):
                relative = Path(run.resolve().name)
            target = target_root / relative
            if target.resolve() == run.resolve():
                raise ValueError(f"export: {run} would be copied onto itself; choose another --out")
            size = 0
            for name in run_files(run):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target / name)
                size += (run / name).stat().st_size
            exported.append(target)
            print(f"export: {run} -> {target} ({len(run_files(run))} files, {size / 1e3:.0f} kB)")
    return exported
