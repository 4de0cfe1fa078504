"""Sweep files, the local W&B grid runner and Optuna studies (parallel workers, resume)."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dep_lightning.data.errors import InputError
from dep_lightning.sweeps.local_grid import completed_points, expand
from dep_lightning.sweeps.spec import load_spec
from tests.helpers import tiny_override

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "sweeps").rglob("*.yaml"))
WANDB_KEYS = {"name", "description", "program", "method", "metric", "parameters", "command", "early_terminate",
              "run_cap", "project", "entity"}


def write_sweep(tmp_path: Path, parameters: str, metric: str = "val/meteor", method: str = "grid") -> Path:
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", limits=(2, 2, 2), max_new_tokens=4)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""
name: tiny
method: {method}
metric: {{name: {metric}, goal: maximize}}
parameters:
{parameters}
command:
  - ${{env}}
  - dep-lightning
  - fit
  - --config
  - {ROOT / 'configs' / 'quickstart.yaml'}
  - --config
  - {override}
  - ${{args}}
""")
    return path


# -- sweep files ------------------------------------------------------------------------

@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_are_wandb_grids(path):
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= WANDB_KEYS, set(raw) - WANDB_KEYS
    assert raw["command"][0] == "${env}" and "${args}" in raw["command"]
    spec = load_spec(path)
    assert spec.method == "grid" and spec.subcommand == "fit"
    assert len(spec.grid()) == math.prod(len(p.values) for p in spec.parameters)


@pytest.mark.slow
def test_every_wandb_sweep_expands_to_command_lines_the_cli_accepts(tmp_path):
    from dep_lightning.sweeps.runner import parse_point

    checked = 0
    for path in SWEEPS:
        spec, points = expand(path, root=tmp_path)
        for run_dir, args in points:
            config = parse_point(args)  # raises ValueError if the CLI would reject the line
            assert config.run_dir == str(run_dir)
            for name, value in zip([p.name for p in spec.parameters], spec.grid()[points.index((run_dir, args))].values()):
                if name == "config":
                    continue
                node = config
                for part in name.split("."):
                    node = node[part]
                assert node == value, (path.name, name)
            checked += 1
    assert checked == sum(len(load_spec(p).grid()) for p in SWEEPS) >= 15


def test_the_cli_rejects_an_expanded_line_with_a_wrong_key(tmp_path):
    from dep_lightning.sweeps.runner import parse_point

    path = write_sweep(tmp_path, "  data.init_args.prompt.embeddingz: {values: [his]}")
    _, [(_, args)] = expand(path, root=tmp_path)
    with pytest.raises(ValueError, match="embeddingz"):
        parse_point(args)


def test_wandb_args_macro_expands_like_wandb(tmp_path):
    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, none]}\n"
                                 "  data.init_args.prompt.with_text: {values: [true, false]}")
    spec = load_spec(path)
    assert spec.grid()[1] == {"model.init_args.refinement": "sae", "data.init_args.prompt.with_text": False}
    args = spec.cli_args(spec.grid()[1])
    assert args[0] == "fit" and args[-2:] == ["--model.init_args.refinement=sae",
                                              "--data.init_args.prompt.with_text=false"]


@pytest.mark.parametrize("body, field", [
    ("method: sideways\nmetric: {name: m}\nparameters: {a: {values: [1]}}\ncommand: [dep-lightning, fit, '${args}']",
     "method"),
    ("method: grid\nmetric: {name: m}\nparameters: {a: {values: []}}\ncommand: [dep-lightning, fit, '${args}']",
     "parameters.a.values"),
    ("method: grid\nmetric: {name: m}\nparameters: {a: {values: [1]}}\ncommand: [dep-lightning, fit]", "command"),
    ("method: random\nmetric: {name: m}\nparameters: {a: {distribution: log_uniform_values, min: 0, max: 1}}\n"
     "command: [dep-lightning, fit, '${args}']", "parameters.a"),
])
def test_bad_sweep_files_name_the_field(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        load_spec(path).grid()
    assert info.value.field == field and str(path) in str(info.value)


def test_a_grid_with_a_continuous_parameter_is_refused(tmp_path):
    path = write_sweep(tmp_path, "  model.init_args.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}")
    with pytest.raises(InputError, match="not a grid"):
        load_spec(path).grid()


# -- the local grid runner ----------------------------------------------------------------

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
    import json

    methods = sorted(json.loads(p.read_text())["method"] for p in root.rglob("manifest.json"))
    assert methods == ["copy_concat", "copy_recent"]


# -- Optuna -----------------------------------------------------------------------------

def _trials(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_optuna_grid_over_two_workers_runs_every_trial_exactly_once(tmp_path):
    from dep_lightning.sweeps.optuna_sweep import sweep

    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, none]}\n"
                                 "  seed_everything: {values: [0, 1]}")
    root = tmp_path / "runs"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    counts = sweep(str(path), storage=storage, workers=2, root=str(root))
    assert counts == {"COMPLETE": 4}
    trials = _trials(storage, "tiny")
    grid = {(p["model.init_args.refinement"], p["seed_everything"]) for p in load_spec(path).grid()}
    assert sorted((t.params["model.init_args.refinement"], t.params["seed_everything"]) for t in trials) == sorted(grid)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both worker processes ran trials"
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert (run / "manifest.json").is_file() and (run / "metrics.json").is_file()
        assert t.value is not None and 0.0 <= t.value <= 1.0
    # Resuming a finished study runs nothing again.
    assert sweep(str(path), storage=storage, workers=2, root=str(root)) == {"COMPLETE": 4}
    assert len(_trials(storage, "tiny")) == 4


@pytest.mark.slow
def test_a_worker_killed_mid_trial_fails_that_trial_and_a_rerun_completes_the_grid(tmp_path):
    import optuna

    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, ae, none]}")
    root, storage = tmp_path / "runs", f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, "-m", "dep_lightning", "sweep", "--spec", str(path), "--storage", storage,
               "--root", str(root), "--heartbeat", "1"]
    worker = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # kill it while its second trial runs
            try:
                states = [t.state.name for t in _trials(storage, "tiny")]
            except (KeyError, optuna.exceptions.StorageInternalError, Exception):
                states = []
            if states.count("COMPLETE") == 1 and "RUNNING" in states:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the worker never reached its second trial:\n" + (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    # Past the grace period (2 x 1 s) as the storage measures it: SQLite's CURRENT_TIMESTAMP has
    # whole-second resolution, so a real gap of d seconds can read as floor(d); the trial is stale
    # once the read gap exceeds 2 s, which a real gap of 3 s + 1 s of timestamp truncation ensures.
    time.sleep(4.0)
    states = sorted(t.state.name for t in _trials(storage, "tiny"))
    assert states.count("COMPLETE") == 1 and "RUNNING" in states

    from dep_lightning.sweeps.optuna_sweep import sweep

    counts = sweep(str(path), storage=storage, root=str(root), heartbeat=1)
    assert counts == {"COMPLETE": 3, "FAIL": 1}, counts
    trials = _trials(storage, "tiny")
    done = sorted(t.params["model.init_args.refinement"] for t in trials if t.state.name == "COMPLETE")
    assert done == ["ae", "none", "sae"]
