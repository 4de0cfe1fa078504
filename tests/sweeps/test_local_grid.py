"""``dep-lightning grid``, the local W&B grid runner: each point once, resumes, ``--jobs``, points
left to another live grid, points killed while scoring."""

import json
import os
import subprocess
import sys

import pytest

from dep_lightning.sweeps.local_grid import completed_points
from tests.sweeps.helpers import ROOT, write_sweep


@pytest.mark.slow
def test_local_grid_runs_each_point_once_and_resumes(tmp_path, capsys):
    from dep_lightning.sweeps.local_grid import run_grid

    path = write_sweep(tmp_path, "  config:\n    values:\n"
                                 f"      - {ROOT / 'configs/baselines/copy_recent.yaml'}\n"
                                 f"      - {ROOT / 'configs/baselines/copy_concat.yaml'}",
                       metric="test/rouge1")
    root = tmp_path / "runs"
    assert run_grid(str(path), root=str(root)) == {"done": 2, "skipped": 0, "failed": 0}
    assert len(completed_points(root)) == 2
    assert run_grid(str(path), root=str(root)) == {"done": 0, "skipped": 2, "failed": 0}
    methods = sorted(json.loads(p.read_text())["method"] for p in root.rglob("manifest.json"))
    assert methods == ["copy_concat", "copy_recent"]

    # A fresh clone holds the committed export, not the run root: the exported points are not
    # run again, and without the export they would be.
    from dep_lightning.results.export import export_runs

    exported = tmp_path / "exported"
    export_runs([str(root)], str(exported))
    fresh = tmp_path / "fresh"
    assert run_grid(str(path), root=str(fresh), exported=[str(exported)]) == {"done": 0, "skipped": 2, "failed": 0}
    assert not fresh.exists() or not list(fresh.rglob("manifest.json"))  # nothing ran there
    assert len(completed_points(exported)) == 2 and len(completed_points(fresh)) == 0

    # A code change since the export (a parameter added to some class) changes every point's
    # configuration key: the copies are still found by their place, <export>/<sweep>/<point>,
    # as a finished point under the root is.
    from dep_lightning.sweeps.local_grid import grid_status

    for marker in exported.rglob("point.json"):
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "key": "from-older-code"}))
    assert completed_points(exported).keys() == {"from-older-code"}
    later = tmp_path / "later"
    assert run_grid(str(path), root=str(later), exported=[str(exported)]) == {"done": 0, "skipped": 2, "failed": 0}
    assert not later.exists() or not list(later.rglob("manifest.json"))
    assert [state.split(" in ")[0] for state in grid_status([str(path)], root=str(later),
                                                             exported=[str(exported)])["tiny"]] == ["complete"] * 2
    # Elsewhere in the export (another sweep's folder) and under another key, they are not this sweep's points.
    (exported / "tiny").rename(exported / "other")
    assert grid_status([str(path)], root=str(later), exported=[str(exported)])["tiny"] == ["not started"] * 2


@pytest.mark.slow
def test_local_grid_runs_points_side_by_side_with_jobs(tmp_path, capsys):
    """``--jobs 2``: both points start before either ends, each child's output goes to its
    grid.log, and each runs with cores // jobs CPU threads (recorded by RunClock)."""
    from dep_lightning.sweeps.local_grid import run_grids

    path = write_sweep(tmp_path, "  config:\n    values:\n"
                                 f"      - {ROOT / 'configs/baselines/copy_recent.yaml'}\n"
                                 f"      - {ROOT / 'configs/baselines/copy_concat.yaml'}",
                       metric="test/rouge1")
    root = tmp_path / "runs"
    assert run_grids([str(path)], root=str(root), jobs=2, threads=1) == {"tiny": {"done": 2, "skipped": 0, "failed": 0}}
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[grid tiny] ")]
    starts = [i for i, line in enumerate(lines) if ": dep-lightning fit" in line]
    ends = [i for i, line in enumerate(lines) if " done in " in line]
    assert len(starts) == len(ends) == 2 and max(starts) < min(ends)  # side by side
    for run in (root / "tiny").iterdir():
        if run.is_dir():
            assert "[test]" in (run / "grid.log").read_text()
            timing = [json.loads(line) for line in (run / "timing.jsonl").read_text().splitlines()]
            assert [t["threads"] for t in timing] == [1]
    assert not list((root / "tiny").glob(".*.running"))  # locks released


def test_a_point_another_live_grid_runs_is_left_to_it(tmp_path):
    from dep_lightning.runlock import claim, release

    run_dir = tmp_path / "sweep" / "point"
    assert claim(run_dir)
    lock = tmp_path / "sweep" / ".point.running"
    mine = lock.read_text()
    assert mine.split()[0] == str(os.getpid())
    assert not claim(run_dir)  # held by a live process (this one)
    release(run_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")  # left by a grid that died
    assert claim(run_dir) and lock.read_text() == mine
    release(run_dir)
    assert not lock.exists()
    # A lock written with only a pid (older grids, systems without /proc) counts while it lives.
    lock.write_text(f"{os.getpid()}\n")
    assert not claim(run_dir)
    lock.unlink()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times come from Linux /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    """After a reboot the pid of a grid that died can belong to another process: the boot id
    and start time recorded beside it tell them apart."""
    from dep_lightning.runlock import claim, lock_owner, release

    run_dir = tmp_path / "sweep" / "point"
    lock = tmp_path / "sweep" / ".point.running"
    assert claim(run_dir)
    pid, boot, start = lock.read_text().split()
    assert lock_owner(run_dir) == os.getpid() == int(pid)
    lock.write_text(f"{pid} {boot} {int(start) + 1}\n")  # this pid, started at another time
    assert lock_owner(run_dir) is None
    lock.write_text(f"{pid} another-boot {start}\n")  # this pid, in another boot
    assert lock_owner(run_dir) is None and claim(run_dir) and lock_owner(run_dir) == os.getpid()
    release(run_dir)


def test_a_point_killed_while_scoring_is_not_complete(tmp_path):
    """``metrics.json`` is written by the test before scoring starts: without ``point.json``
    (written when the run exits 0) the point runs again."""
    from dep_lightning.sweeps.local_grid import point_complete

    run_dir = tmp_path / "point"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "metrics.json").write_text("{}")
    assert not point_complete(run_dir)
    (run_dir / "point.json").write_text("{}")
    assert point_complete(run_dir)


def test_grid_status_tells_where_each_point_stands(tmp_path, capsys):
    """``grid --status``: complete here, complete in an export, running under a live grid,
    interrupted with the step its last.ckpt holds and its validations, started without a
    checkpoint, not started; nothing runs."""
    import torch

    from dep_lightning.sweeps.local_grid import claim, expand, grid, point_key, release

    names = ("copy_recent", "copy_concat", "non_perso", "rag", "pag", "dpl")
    path = write_sweep(tmp_path, "  config:\n    values:\n"
                       + "".join(f"      - {ROOT / 'configs/baselines' / name}.yaml\n" for name in names),
                       metric="test/rouge1")
    root, exported = tmp_path / "runs", tmp_path / "exported"
    _, points = expand(path, root)
    complete, _, running, interrupted, started, _ = (run_dir for run_dir, _ in points)
    for folder, key in ((complete, "here"), (exported / "copied", point_key(points[1][1]))):
        folder.mkdir(parents=True)
        for name in ("manifest.json", "metrics.json"):
            (folder / name).write_text("{}")
        (folder / "point.json").write_text(json.dumps({"key": key}))
    assert claim(running)
    (interrupted / "checkpoints").mkdir(parents=True)
    # Saved at the first validation; the second (step 108) was not a new best and wrote none.
    # Its schedule ends at step 300 (WarmupLinearDecay's total_steps in the checkpoint).
    torch.save({"global_step": 54, "lr_schedulers": [{"total_steps": 300, "warmup_steps": 3}]},
               interrupted / "checkpoints" / "last.ckpt")
    # 100 CPU seconds per step, the validation included, over the 108 steps timed.
    (interrupted / "timing.jsonl").write_text("".join(
        json.dumps({"stage": "fit", "steps": 54, "global_step": step, "cpu_seconds": 5400.0}) + "\n"
        for step in (54, 108)))
    (interrupted / "scores").mkdir()
    (interrupted / "scores" / "partial-0123456789abcdef-rank0.jsonl").write_text('{"inputs": "a"}\n{"inputs": "b"}\n')
    (interrupted / "metrics.csv").write_text("epoch,step,train/loss,val/nll\n0,53,4.1,\n0,53,,3.7\n0,107,,3.9\n")
    started.mkdir(parents=True)
    try:
        grid([str(path)], root=str(root), exported=[str(exported)], status=True)
    finally:
        release(running)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[grid tiny]")]
    assert lines == [
        f"[grid tiny] 1/6 complete: {complete}",
        f"[grid tiny] 2/6 complete in {exported / 'copied'}",
        f"[grid tiny] 3/6 running (grid pid {os.getpid()}): {running}",
        f"[grid tiny] 4/6 interrupted at step 54 of 300 (validated to step 108), 2 validation(s), "
        f"best val/nll 3.7000, at most 6.8 CPU-hours to go (100.0 CPU-s per step over 108 steps, validations "
        f"included), 2 scored batch(es) kept; "
        f"resumes from "
        f"checkpoints/last.ckpt: {interrupted}",
        f"[grid tiny] 5/6 started, no checkpoint (runs again from the start): {started}",
        "[grid tiny] 6/6 not started",
    ]
    assert [p.parent for p in root.rglob("metrics.json")] == [complete]  # nothing ran


@pytest.mark.slow
def test_sigterm_stops_a_grid_and_its_point_and_releases_the_lock(tmp_path):
    """A grid started in the background ignores Ctrl-C; ``kill`` (SIGTERM) ends it like one:
    the running point's process group is killed and its lock removed."""
    import signal
    import time

    path = write_sweep(tmp_path, f"  config:\n    values:\n      - {ROOT / 'configs/baselines/copy_recent.yaml'}\n",
                       metric="test/rouge1")
    root = tmp_path / "runs"
    grid = subprocess.Popen([sys.executable, "-m", "dep_lightning", "grid", str(path), "--root", str(root),
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    locks, children = [], []
    for _ in range(600):  # the point has started once its lock is there and its process runs
        locks = list((root / "tiny").glob(".*.running")) if (root / "tiny").is_dir() else []
        children = subprocess.run(["pgrep", "-P", str(grid.pid)], capture_output=True, text=True).stdout.split()
        if (locks and children) or grid.poll() is not None:
            break
        time.sleep(0.05)
    assert len(locks) == 1 and len(children) == 1 and grid.poll() is None
    child = int(children[0])
    grid.send_signal(signal.SIGTERM)
    output, _ = grid.communicate(timeout=60)
    assert grid.returncode == 128 + signal.SIGTERM
    assert not locks[0].exists()
    assert "[grid tiny] {'done': 0, 'skipped': 0, 'failed': 0}" not in output  # stopped, not finished
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.slow
def test_a_grids_points_share_the_batches_the_backbone_alone_scores(tmp_path):
    """Two DEP points (another loss weight, so other weights; the same seed, so the same tiny
    backbone) scored after their fit under ``true`` and ``none``: the second takes every ``none``
    batch from the first (``<root>/.backbone-scores``) and computes its own ``true``."""
    from dep_lightning.sweeps.local_grid import run_grid

    scoring = tmp_path / "scoring.yaml"
    scoring.write_text("score_after_fit: [true, none]\n")
    path = write_sweep(tmp_path, "  model.init_args.lam:\n    values: [1.0, 10.0]", configs=(scoring,))
    root = tmp_path / "runs"
    assert run_grid(str(path), root=str(root)) == {"done": 2, "skipped": 0, "failed": 0}
    lines = [[json.loads(t) for t in (run / "timing.jsonl").read_text().splitlines() if '"score"' in t][0]
             for run in sorted(completed_points(root).values(), key=lambda p: (p / "point.json").stat().st_mtime_ns)]
    half = lines[0]["batches_computed"] // 2
    assert half > 0 and lines[0]["batches_shared"] == 0
    assert (lines[1]["batches_computed"], lines[1]["batches_shared"]) == (half, half)
    assert len(list((root / ".backbone-scores").glob("partial-backbone-*.jsonl"))) == 1


def test_remaining_cost_is_the_measured_pace_times_the_steps_left():
    """(limit − step) × CPU seconds per step over the timed lines; nothing without a limit, a
    pace, or steps left; lines without CPU time (older runs) are left out of the pace."""
    from dep_lightning.sweeps.local_grid import remaining_cost

    # A validation right after a checkpoint between validations is a line of its own, without steps.
    lines = [{"steps": 50, "cpu_seconds": 1000.0}, {"steps": 50, "cpu_seconds": 2000.0},
             {"steps": 0, "validations": 1, "cpu_seconds": 1000.0}, {"steps": 10}]
    assert remaining_cost(lines, 100, 280) == \
        "at most 2.0 CPU-hours to go (40.0 CPU-s per step over 100 steps, validations included)"
    assert remaining_cost(lines, 100, None) == ""
    assert remaining_cost(lines, 280, 280) == ""
    assert remaining_cost([{"steps": 10}], 10, 280) == ""
