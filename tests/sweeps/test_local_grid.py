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
    from dep_lightning.sweeps.local_grid import claim, release

    run_dir = tmp_path / "sweep" / "point"
    assert claim(run_dir)
    lock = tmp_path / "sweep" / ".point.running"
    assert lock.read_text() == f"{os.getpid()}\n"
    assert not claim(run_dir)  # held by a live process (this one)
    release(run_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")  # left by a grid that died
    assert claim(run_dir) and lock.read_text() == f"{os.getpid()}\n"
    release(run_dir)
    assert not lock.exists()


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
