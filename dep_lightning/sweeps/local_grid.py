"""``dep-lightning grid``: a W&B grid sweep expanded and run here, without a W&B server.

For offline machines: every grid point of a sweep file becomes the same command line a
``wandb agent`` would run (``${args}`` expanded as W&B does), executed one after another
in a child process each. Each point's run directory is ``<root>/<sweep>/<point>`` with a
stable name derived from its parameters, so a rerun skips points that already completed
(an interrupted grid resumes) and a failed point does not stop the others. A point whose
resolved configuration already ran anywhere under ``root`` (the DEP default appears in
several of the paper's tables) is not run twice: ``point.json`` in each run directory
records the configuration's identity.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dep_lightning.sweeps.runner import is_complete, point_key, point_version, run_child, run_dir_args
from dep_lightning.sweeps.spec import load_spec


def expand(spec_path: str | Path, root: str | Path = "runs/sweeps", extra: Sequence[str] = ()):
    """``(run_dir, args)`` for every grid point; ``args`` start with the subcommand."""
    spec = load_spec(spec_path)
    points = []
    for params in spec.grid():
        version = point_version(params)
        args = spec.cli_args(params) + list(extra) + run_dir_args(root, spec.name, version)
        points.append((Path(root) / spec.name / version, args))
    return spec, points


def grid(spec: list[str], root: str = "runs/sweeps", dry_run: bool = False, extra: Sequence[str] = ()) -> None:
    """Run W&B grid sweep files here, one point after another, without a W&B server.

    Points already complete under ``root`` are skipped, so the same command resumes an
    interrupted grid. A failed point does not stop the others, but the command exits with
    status 1 at the end so that scripts (``make ablation``) notice it.

    Args:
        spec: sweep file(s), e.g. sweeps/table3_refinement.yaml.
        root: run directories go to <root>/<sweep>/<point>.
        dry_run: print the command lines only.
        extra: an extra dep-lightning argument for every point, once per argument, e.g.
            --extra=--data.init_args.limit_test=8.
    """
    failed = sum(run_grid(path, root=root, dry_run=dry_run, extra=extra)["failed"] for path in spec)
    if failed:
        raise SystemExit(1)


def run_grid(spec_path: str, root: str = "runs/sweeps", dry_run: bool = False,
             extra: Sequence[str] = ()) -> dict[str, int]:
    """Run every grid point not yet complete; returns counts of done / skipped / failed points."""
    spec, points = expand(spec_path, root, extra)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    print(f"[grid {spec.name}] {len(points)} point(s) under {Path(root) / spec.name}", flush=True)
    done = completed_points(root)
    for number, (run_dir, args) in enumerate(points, start=1):
        line = "dep-lightning " + " ".join(args)
        try:
            key = point_key(args)
        except ValueError as error:  # the CLI would reject this line: report it, go on
            counts["failed"] += 1
            print(f"[grid {spec.name}] {number}/{len(points)} FAILED: {error}", file=sys.stderr, flush=True)
            continue
        if is_complete(run_dir) or key in done:
            counts["skipped"] += 1
            where = run_dir if is_complete(run_dir) else done[key]
            print(f"[grid {spec.name}] {number}/{len(points)} already complete: {where}", flush=True)
            continue
        if dry_run:
            print(line)
            continue
        print(f"[grid {spec.name}] {number}/{len(points)}: {line}", flush=True)
        start = time.monotonic()
        code = run_child(args)
        minutes = (time.monotonic() - start) / 60
        if code == 0 and is_complete(run_dir):
            (run_dir / "point.json").write_text(json.dumps({"key": key, "args": args}, indent=2) + "\n")
            done[key] = run_dir
            counts["done"] += 1
            print(f"[grid {spec.name}] {number}/{len(points)} done in {minutes:.1f} min: {run_dir}", flush=True)
        else:
            counts["failed"] += 1
            print(f"[grid {spec.name}] {number}/{len(points)} FAILED (exit {code}) after {minutes:.1f} min",
                  file=sys.stderr, flush=True)
    print(f"[grid {spec.name}] {counts}", flush=True)
    return counts


def completed_points(root: str | Path) -> dict[str, Path]:
    """Configuration identity -> run directory, for every complete run under ``root``."""
    found = {}
    for marker in sorted(Path(root).rglob("point.json")):
        if is_complete(marker.parent):
            found[json.loads(marker.read_text())["key"]] = marker.parent
    return found
