"""``dep-lightning grid``: a W&B grid sweep expanded and run here, without a W&B server.

For offline machines: every grid point of a sweep file becomes the same command line a
``wandb agent`` would run (``${args}`` expanded as W&B does), executed one after another
in a child process each. Each point's run directory is ``<root>/<sweep>/<point>`` with a
stable name derived from its parameters, so a rerun skips points that already completed
(an interrupted grid resumes) and a failed point does not stop the others; ``--jobs N`` runs
N points at once, and a point another grid command is running is left to it. A point whose
resolved configuration already ran anywhere under ``root`` (the DEP default appears in
several of the paper's tables) is not run twice: ``point.json`` in each run directory
records the configuration's identity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dep_lightning.data.errors import ConfigError
from dep_lightning.journal import SHARED_SCORES_ENV
from dep_lightning.runlock import claim, lock_owner, release
from dep_lightning.sweeps.runner import (
    is_complete,
    point_key,
    point_version,
    run_dir_args,
    sigterm_as_exit,
    start_child,
    stop_child,
)
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


def grid(spec: list[str], root: str = "runs/sweeps", dry_run: bool = False, extra: Sequence[str] = (),
         jobs: int = 1, threads: int | None = None, exported: Sequence[str] = (), status: bool = False) -> None:
    """Run W&B grid sweep files here, without a W&B server: the points of all files in order,
    ``--jobs`` of them at once.

    Points already complete under ``root`` are skipped, so the same command resumes an
    interrupted grid; a point that another grid command is running now is left to it. A failed
    point does not stop the others, but the command exits with status 1 at the end so that
    scripts (``make ablation``) notice it.

    Args:
        spec: sweep file(s), e.g. sweeps/table3_refinement.yaml.
        root: run directories go to <root>/<sweep>/<point>.
        dry_run: print the command lines only.
        extra: an extra dep-lightning argument for every point, once per argument, e.g.
            --extra=--data.init_args.limit_test=8.
        jobs: points run at once, each a child process. With more than one, a point's output
            goes to <run dir>/grid.log (the grid prints when each starts and ends).
        threads: CPU threads of each point (OMP_NUM_THREADS / MKL_NUM_THREADS). Default: the
            environment's with one job; with several, the environment's OMP_NUM_THREADS if set,
            else the CPU count divided by jobs.
        exported: folders of exported runs (``dep-lightning export``): a point complete in one
            of them (its copy at ``<exported>/<sweep>/<point>``, or a run of the same
            configuration, ``point_key``) is not run again. ``make study`` passes the committed
            export, so a fresh clone resumes the study where its last export left it.
        status: print where each point stands and run nothing: complete (here or in an export),
            running (the grid command's pid), interrupted (the optimizer step and validations
            its last checkpoint holds, where it resumes), started without a checkpoint, or not
            started.
    """
    if jobs < 1:
        raise ConfigError("--jobs", jobs, "run at least one point at a time")
    if status:
        grid_status(spec, root=root, extra=extra, exported=exported)
        return
    counts = run_grids(spec, root=root, dry_run=dry_run, extra=extra, jobs=jobs, threads=threads,
                       exported=exported)
    if sum(c["failed"] for c in counts.values()):
        raise SystemExit(1)


def run_grid(spec_path: str, root: str = "runs/sweeps", dry_run: bool = False,
             extra: Sequence[str] = (), exported: Sequence[str] = ()) -> dict[str, int]:
    """Run every grid point of one sweep file not yet complete; counts of done / skipped / failed points."""
    return next(iter(run_grids([spec_path], root=root, dry_run=dry_run, extra=extra, exported=exported).values()))


@dataclass
class Point:
    sweep: str
    number: int
    of: int
    run_dir: Path
    args: list[str]
    key: str | None = None
    #: The point's complete copy in an exported folder (:func:`exported_copy`), if any.
    copy: Path | None = None

    @property
    def label(self) -> str:
        return f"[grid {self.sweep}] {self.number}/{self.of}"


def run_grids(spec_paths: Sequence[str], root: str = "runs/sweeps", dry_run: bool = False,
              extra: Sequence[str] = (), jobs: int = 1, threads: int | None = None,
              exported: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """Run the points of every sweep file, in order, ``jobs`` at once; counts per sweep. A point
    complete under ``root`` or under one of the ``exported`` folders is skipped."""
    if jobs > 1 and threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    queue: deque[Point] = deque()
    counts: dict[str, dict[str, int]] = {}
    for path in spec_paths:
        spec, points = expand(path, root, extra)
        counts[spec.name] = {"done": 0, "skipped": 0, "failed": 0}
        print(f"[grid {spec.name}] {len(points)} point(s) under {Path(root) / spec.name}", flush=True)
        queue.extend(Point(spec.name, n, len(points), run_dir, args, copy=exported_copy(run_dir, root, exported))
                     for n, (run_dir, args) in enumerate(points, 1))
        if dry_run:
            for point in points:
                print("dep-lightning " + " ".join(point[1]))
    if not dry_run:
        if jobs > 1:
            print(f"[grid] {jobs} points at once, {threads or 'default'} CPU thread(s) each; each point's output "
                  f"in <run dir>/grid.log", flush=True)
        # The points' scoring shares the batches the frozen backbone alone scores (scoring.py).
        shared = {SHARED_SCORES_ENV: str(Path(root).resolve() / ".backbone-scores")}
        Scheduler(counts, completed_anywhere(root, exported), jobs, threads, shared).run(queue)
    for name, count in counts.items():
        print(f"[grid {name}] {count}", flush=True)
    return counts


class Scheduler:
    """Runs queued points as child processes, ``jobs`` at once, in queue order, and counts each
    point's outcome in ``counts`` (per sweep: done / skipped / failed).

    ``done`` maps configuration identities (``point_key``) to the run directory where they
    completed; a point whose configuration is there, or runs now under another point, or under
    another grid command (its lock), is not started. Children still running when :meth:`run`
    leaves (an interrupt) are stopped and their locks released.
    """

    def __init__(self, counts: dict[str, dict[str, int]], done: dict[str, Path], jobs: int, threads: int | None,
                 env: dict[str, str] | None = None):
        self.counts, self.done, self.jobs, self.threads, self.env = counts, done, jobs, threads, env
        self.running: dict[subprocess.Popen, tuple[Point, float, Any]] = {}

    def run(self, queue: deque[Point]) -> None:
        with sigterm_as_exit():
            self._run(queue)

    def _run(self, queue: deque[Point]) -> None:
        try:
            while queue or self.running:
                self.start_ready(queue)
                finished = [process for process in self.running if process.poll() is not None]
                if not finished:
                    time.sleep(0.5)
                for process in finished:
                    self.finish(process)
        finally:
            for process, (point, _, log) in self.running.items():
                stop_child(process)
                if log is not None:
                    log.close()
                release(point.run_dir)

    def start_ready(self, queue: deque[Point]) -> None:
        """Start queued points, in order, while fewer than ``jobs`` run; settle the ones that
        need no run. A point whose configuration runs now under another point waits."""
        for point in list(queue):
            if len(self.running) >= self.jobs:
                return
            if point.key is None:
                try:
                    point.key = point_key(point.args)
                except ValueError as error:  # the CLI would reject this line: report it, go on
                    queue.remove(point)
                    self.counts[point.sweep]["failed"] += 1
                    print(f"{point.label} FAILED: {error}", file=sys.stderr, flush=True)
                    continue
            if point.key in {p.key for p, _, _ in self.running.values()}:
                continue
            queue.remove(point)
            where = point.run_dir if point_complete(point.run_dir) else point.copy or self.done.get(point.key)
            if where is not None:
                self.counts[point.sweep]["skipped"] += 1
                print(f"{point.label} already complete: {where}", flush=True)
            elif not claim(point.run_dir):
                self.counts[point.sweep]["skipped"] += 1
                print(f"{point.label} running under another grid command now: {point.run_dir}", flush=True)
            else:
                self.start(point)

    def start(self, point: Point) -> None:
        print(f"{point.label}: dep-lightning " + " ".join(point.args), flush=True)
        log = None
        if self.jobs > 1:
            point.run_dir.mkdir(parents=True, exist_ok=True)
            log = (point.run_dir / "grid.log").open("a")
        self.running[start_child(point.args, threads=self.threads, output=log, defaults=self.env)] = (
            point, time.monotonic(), log)

    def finish(self, process: subprocess.Popen) -> None:
        """Settle a point whose child exited: done (``point.json`` written) or failed."""
        point, start, log = self.running.pop(process)
        if log is not None:
            log.close()
        release(point.run_dir)
        minutes = (time.monotonic() - start) / 60
        if process.returncode == 0 and is_complete(point.run_dir):
            (point.run_dir / "point.json").write_text(json.dumps({"key": point.key, "args": point.args},
                                                                 indent=2) + "\n")
            self.done[point.key] = point.run_dir
            self.counts[point.sweep]["done"] += 1
            print(f"{point.label} done in {minutes:.1f} min: {point.run_dir}", flush=True)
        else:
            self.counts[point.sweep]["failed"] += 1
            where = f"; its output: {point.run_dir / 'grid.log'}" if log is not None else ""
            print(f"{point.label} FAILED (exit {process.returncode}) after {minutes:.1f} min{where}",
                  file=sys.stderr, flush=True)


def point_complete(run_dir: Path) -> bool:
    """A grid point is complete once its run exited 0 with its registry files (``point.json``
    is written then). ``metrics.json`` alone is not enough: a run that also scores after its
    test has written it before scoring, and a run killed while scoring must run again."""
    return (run_dir / "point.json").is_file() and is_complete(run_dir)


def exported_copy(run_dir: Path, root: str | Path, exported: Sequence[str | Path]) -> Path | None:
    """The complete copy of the point ``run_dir`` in one of the ``exported`` folders, else None.

    ``dep-lightning export`` keeps the layout under the root (``<exported>/<sweep>/<point>``), and
    a point's directory name comes from its sweep parameters, so the copy is found by name, as
    the point itself is under ``root``: a finished point counts as finished whether it lies here
    or was exported, even where a code change since has changed its :func:`point_key` (the
    resolved configuration holds every class's parameters, defaults included, so a parameter
    added to any class changes every key)."""
    relative = Path(run_dir).relative_to(root)
    for folder in exported:
        if point_complete(Path(folder) / relative):
            return Path(folder) / relative
    return None


def completed_points(root: str | Path) -> dict[str, Path]:
    """Configuration identity -> run directory, for every complete run under ``root``."""
    found = {}
    for marker in sorted(Path(root).rglob("point.json")):
        if is_complete(marker.parent):
            found[json.loads(marker.read_text())["key"]] = marker.parent
    return found


def completed_anywhere(root: str | Path, exported: Sequence[str | Path] = ()) -> dict[str, Path]:
    """:func:`completed_points` of the exported folders and of ``root``; a run under ``root``
    wins over an exported copy of it."""
    done: dict[str, Path] = {}
    for folder in [*exported, root]:
        done.update(completed_points(folder))
    return done


def checkpoint_step(path: Path) -> tuple[int, int | None] | None:
    """The optimizer step a Lightning checkpoint file holds (its ``global_step``) and the
    step its learning-rate schedule ends at (a schedule's ``total_steps``, as
    ``WarmupLinearDecay`` keeps it; None for a schedule without one); None when there is no
    such file (a DeepSpeed checkpoint is a folder: its step is not read here)."""
    if not path.is_file():
        return None
    import torch

    # mmap: only the few bytes of the step are read, not the weights.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    totals = [s.get("total_steps") for s in state.get("lr_schedulers", []) if isinstance(s, dict)]
    return int(state["global_step"]), next((int(t) for t in totals if t), None)


def remaining_cost(fit_lines: list[dict], step: int, limit: int | None) -> str:
    """The CPU time a fit has left to ``limit`` at the pace its ``timing.jsonl`` lines show
    (CPU seconds per optimizer step, validations included); empty without a limit or a pace.
    An upper bound: early stopping may end the fit before its step limit."""
    timed = [line for line in fit_lines if line.get("cpu_seconds") is not None]
    steps = sum(line.get("steps", 0) for line in timed)
    if limit is None or not steps or step >= limit:
        return ""
    pace = sum(line["cpu_seconds"] for line in timed) / steps
    return (f"at most {(limit - step) * pace / 3600:.1f} CPU-hours to go "
            f"({pace:.1f} CPU-s per step over {steps} steps, validations included)")


def point_progress(run_dir: Path, checkpoint: bool = True) -> str:
    """How far a point got: the optimizer step ``checkpoints/last.ckpt`` holds (where a
    resume starts; not read with ``checkpoint=False``, for a point whose fit may be writing
    it), the step of its newest validation (``timing.jsonl``) where that is later, its
    validations and the best ``val/nll`` logged (``metrics.csv``, with the rows an unfinished
    resume set aside), and the batches an unfinished scoring run kept; empty when nothing is
    recorded."""
    import csv

    from dep_lightning.callbacks.clock import read_timing
    from dep_lightning.callbacks.history import HISTORY_ASIDE

    parts = []
    saved, limit = (checkpoint_step(run_dir / "checkpoints" / "last.ckpt") if checkpoint else None) or (None, None)
    fit = [line for line in read_timing(run_dir) if line["stage"] == "fit" and "global_step" in line]
    validated = max((line["global_step"] for line in fit), default=None)
    limit = next((line["step_limit"] for line in reversed(fit) if line.get("step_limit")), limit)
    of = f" of {limit}" if limit else ""
    if saved is not None:
        parts.append(f"step {saved}{of}" + (f" (validated to step {validated})"
                                            if validated is not None and validated > saved else ""))
    elif validated is not None:
        parts.append(f"step {validated}{of}")
    values = {}
    for name in (HISTORY_ASIDE, "metrics.csv"):
        if (run_dir / name).is_file():
            with (run_dir / name).open(newline="") as handle:
                for row in csv.DictReader(handle):
                    if row.get("val/nll"):
                        values[(row["step"], row["val/nll"])] = float(row["val/nll"])
    if values:
        parts.append(f"{len(values)} validation(s), best val/nll {min(values.values()):.4f}")
    step = saved if saved is not None else validated
    if step is not None and (cost := remaining_cost(fit, step, limit)):
        parts.append(cost)
    # Batches an unfinished scoring run computed (scoring.ScoreCache): a rerun keeps them.
    kept = sum(len(path.read_text().splitlines()) for path in (run_dir / "scores").glob("partial-*-rank*.jsonl"))
    if kept:
        parts.append(f"{kept} scored batch(es) kept")
    return ", ".join(parts)


def point_state(point: Point, done: dict[str, Path]) -> str:
    """Where one grid point stands (``grid --status``)."""
    run_dir = point.run_dir
    if point_complete(run_dir):
        return f"complete: {run_dir}"
    if point.copy is not None:
        return f"complete in {point.copy}"
    if point.key in done:
        return f"complete in {done[point.key]}"
    owner = lock_owner(run_dir)
    if owner is not None:
        progress = point_progress(run_dir, checkpoint=False)
        return f"running (grid pid {owner}){', ' + progress if progress else ''}: {run_dir}"
    progress = point_progress(run_dir)
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return f"interrupted{' at ' + progress if progress else ''}; resumes from checkpoints/last.ckpt: {run_dir}"
    if run_dir.exists():
        return f"started, no checkpoint (runs again from the start): {run_dir}"
    return "not started"


def grid_status(spec_paths: Sequence[str], root: str = "runs/sweeps", extra: Sequence[str] = (),
                exported: Sequence[str] = ()) -> dict[str, list[str]]:
    """Print and return each point's state per sweep (see :func:`grid`'s ``status``)."""
    done = completed_anywhere(root, exported)
    states: dict[str, list[str]] = {}
    for path in spec_paths:
        spec, points = expand(path, root, extra)
        states[spec.name] = []
        for number, (run_dir, args) in enumerate(points, 1):
            point = Point(spec.name, number, len(points), run_dir, args, copy=exported_copy(run_dir, root, exported))
            try:
                point.key = point_key(args)
            except ValueError as error:
                state = f"invalid: {error}"
            else:
                state = point_state(point, done)
            states[spec.name].append(state)
            print(f"{point.label} {state}", flush=True)
    return states
