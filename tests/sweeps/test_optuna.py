"""Optuna studies: claiming trials, parallel workers, pruning, resume after a killed worker, DDP trials.

The tests run against SQLite and, when ``DEP_TEST_POSTGRES_URL`` names a server (``.ci/run``
starts a throwaway one), against PostgreSQL.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dep_lightning.sweeps.local_grid import expand
from dep_lightning.sweeps.spec import load_spec
from tests.sweeps.helpers import ROOT, write_sweep


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, tmp_path) -> tuple[str, str]:
    """``(storage URL, study name)``: a fresh SQLite file, or a fresh study on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}", "tiny"
    url = os.environ.get("DEP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DEP_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    return url, f"tiny-{uuid.uuid4().hex[:12]}"


def _trials(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _waiting_study(url: str, name: str, n: int):
    """A study holding ``n`` WAITING trials; the raw RDB storage and the study."""
    import optuna

    from dep_lightning.sweeps.storage import make_storage

    rdb = make_storage(url)
    study = optuna.create_study(storage=rdb, study_name=name)
    for i in range(n):
        study.enqueue_trial({"x": i})
    return rdb, study


def test_a_claimed_trial_cannot_be_claimed_again(storage):
    from dep_lightning.sweeps.optuna_sweep import _claim_waiting, claim

    rdb, study = _waiting_study(*storage, n=2)
    first = _claim_waiting(study, rdb)
    assert first is not None and not claim(rdb, first)
    second = _claim_waiting(study, rdb)
    assert second not in (None, first) and _claim_waiting(study, rdb) is None
    assert sorted(t.state.name for t in study.get_trials()) == ["RUNNING", "RUNNING"]
    assert all(t.datetime_start is not None for t in study.get_trials())


def test_a_trial_claimed_by_a_worker_that_dies_at_once_goes_stale(storage):
    """The claim records the first heartbeat itself: optuna never fails a RUNNING trial that has
    no heartbeat at all, so a worker killed right after claiming (before its heartbeat thread
    beat once) used to leave its trial RUNNING for good (seen in CI under load)."""
    import optuna

    from dep_lightning.sweeps.optuna_sweep import _claim_waiting
    from dep_lightning.sweeps.storage import make_storage

    url, name = storage
    _, study = _waiting_study(url, name, n=1)
    trial_id = _claim_waiting(study, make_storage(url))  # and then nothing: the worker is gone
    watcher = make_storage(url, heartbeat_interval=1)
    study = optuna.load_study(study_name=name, storage=watcher)
    # Stale once the storage's own clock has moved past the 2 s grace period; SQLite's
    # CURRENT_TIMESTAMP has whole seconds, so wait 2 s + 1 s of truncation + margin.
    time.sleep(4.0)
    optuna.storages.fail_stale_trials(study)
    assert watcher.get_trial(trial_id).state.name == "FAIL"


CLAIMER = """
import sys, time
from pathlib import Path
from dep_lightning.sweeps.optuna_sweep import claim
from dep_lightning.sweeps.storage import make_storage
url, ids, folder = sys.argv[1], [int(i) for i in sys.argv[2].split(",")], Path(sys.argv[3])
storage = make_storage(url)
storage.engine.connect().close()
(folder / f"ready-{sys.argv[4]}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
print(",".join(str(i) for i in ids if claim(storage, i)))
"""


@pytest.mark.slow
def test_racing_processes_claim_each_waiting_trial_exactly_once(storage, tmp_path):
    """Four processes try to claim the same 40 WAITING trials at the same moment, all in the same
    order (the worst case): each trial goes to exactly one of them (see ``claim`` for why)."""
    rdb, study = _waiting_study(*storage, n=40)
    study_id = rdb.get_study_id_from_name(study.study_name)
    ids = ",".join(str(rdb.get_trial_id_from_study_id_trial_number(study_id, n)) for n in range(40))
    racers = [subprocess.Popen([sys.executable, "-c", CLAIMER, storage[0], ids, str(tmp_path), str(n)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True) for n in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [r.communicate(timeout=120)[0].strip() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    won = [int(i) for out in outputs for i in out.split(",") if i]
    assert sorted(won) == sorted(int(i) for i in ids.split(",")), outputs


@pytest.mark.parametrize("visible, workers, per_trial, expected", [
    (["0", "1", "2", "3"], 2, 2, ["0,1", "2,3"]),
    (["0", "1", "2", "3", "4", "5", "6", "7"], 4, 1, ["0", "1", "2", "3"]),
    (["4", "6", "7"], 1, 2, ["4,6"]),                       # a CUDA_VISIBLE_DEVICES subset, in its order
    (["GPU-a", "GPU-b"], 2, 1, ["GPU-a", "GPU-b"]),         # UUIDs pass through
    ([], 3, 2, [None, None, None]),                         # CPU: nothing is set
    (["0", "1"], 2, None, [None, None]),                    # no --devices-per-trial: nothing is set
])
def test_device_slices_give_each_worker_its_own_gpus(visible, workers, per_trial, expected):
    from dep_lightning.sweeps.optuna_sweep import device_slices

    assert device_slices(visible, workers, per_trial) == expected


@pytest.mark.parametrize("visible, workers, per_trial, field", [
    (["0", "1", "2"], 2, 2, "--devices-per-trial"),
    (["0", "1"], 1, 0, "--devices-per-trial"),
    ([], 0, None, "--workers"),
])
def test_device_slices_refuse_what_cannot_fit(visible, workers, per_trial, field):
    from dep_lightning.data.errors import ConfigError
    from dep_lightning.sweeps.optuna_sweep import device_slices

    with pytest.raises(ConfigError) as info:
        device_slices(visible, workers, per_trial)
    assert info.value.field == field and "\n" not in str(info.value)


def test_a_trial_child_forms_its_own_process_group(monkeypatch):
    from dep_lightning.sweeps.runner import child_env

    for name, value in (("MASTER_PORT", "29500"), ("MASTER_ADDR", "node1"), ("RANK", "1"), ("LOCAL_RANK", "1"),
                        ("WORLD_SIZE", "2"), ("CUDA_VISIBLE_DEVICES", "0,1,2,3")):
        monkeypatch.setenv(name, value)
    env = child_env("2,3")
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert not {"MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE"} & set(env)
    assert child_env()["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_the_trial_value_is_read_from_the_run_directory(tmp_path):
    from dep_lightning.sweeps.runner import metric_value

    (tmp_path / "metrics.csv").write_text("epoch,step,val/meteor,val/loss,train/loss\n"
                                          "0,3,,,2.5\n0,3,0.25,3.0,\n1,7,0.5,2.0,\n2,11,0.125,2.5,\n")
    (tmp_path / "config.yaml").write_text(
        "trainer:\n  callbacks:\n  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "    init_args: {monitor: val/meteor, mode: max}\n")
    assert metric_value(tmp_path, "val/meteor") == 0.5  # the best checkpoint's score
    assert metric_value(tmp_path, "val/loss") == 2.5  # not monitored: the last logged value
    assert metric_value(tmp_path, "val/bleu") is None
    assert metric_value(tmp_path, "test/rouge1") is None
    (tmp_path / "metrics.json").write_text(json.dumps({"overall": {"rouge1": 0.3}}))
    assert metric_value(tmp_path, "test/rouge1") == 0.3


def test_pruning_reaches_the_trial_from_its_child_process(tmp_path):
    """The callback a pruned trial's child runs: it reports, decides and leaves the mark the worker reads."""
    from types import SimpleNamespace

    import optuna

    from dep_lightning.sweeps.optuna_sweep import _record
    from dep_lightning.sweeps.pruning import PRUNED_AT, TrialPruning, pruning_args
    from dep_lightning.sweeps.runner import parse_point
    from dep_lightning.sweeps.storage import make_pruner, make_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    rdb = make_storage(url)
    study = optuna.create_study(storage=rdb, study_name="p", direction="maximize", pruner=make_pruner("median"))
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, step=0)
        study.tell(trial, value)
    trial = study.ask()
    callback = TrialPruning(url, "p", trial.number, "val/meteor", "median")
    trainer = SimpleNamespace(callback_metrics={"val/meteor": 0.1}, current_epoch=0, sanity_checking=False,
                              is_global_zero=True, should_stop=False,
                              strategy=SimpleNamespace(broadcast=lambda value, src: value))
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and rdb.get_trial(trial._trial_id).user_attrs[PRUNED_AT] == 0
    spec = SimpleNamespace(metric="val/meteor")
    _record(spec, study, rdb, trial, trial._trial_id, 0, tmp_path)
    assert study.trials[-1].state.name == "PRUNED" and study.trials[-1].intermediate_values == {0: 0.1}
    # The trial's command line accepts the callback (the CLI parses it into trainer.callbacks).
    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae]}")
    _, [(_, args)] = expand(path, root=tmp_path)
    config = parse_point(args + pruning_args(url, "p", 2, "val/meteor", "median"))
    assert config.trainer.callbacks[-1].class_path == "dep_lightning.sweeps.pruning.TrialPruning"
    assert config.trainer.callbacks[-1].init_args.trial_number == 2


@pytest.mark.slow
def test_optuna_grid_over_two_workers_runs_every_trial_exactly_once(tmp_path, storage):
    from dep_lightning.sweeps.optuna_sweep import SweepOptions, sweep

    url, name = storage
    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, none]}\n"
                                 "  seed_everything: {values: [0, 1]}")
    root = tmp_path / "runs"
    options = SweepOptions(spec=str(path), storage=url, study_name=name, workers=2, root=str(root))
    counts = sweep(options)
    assert counts == {"COMPLETE": 4}
    trials = _trials(url, name)
    grid = {(p["model.init_args.refinement"], p["seed_everything"]) for p in load_spec(path).grid()}
    assert sorted((t.params["model.init_args.refinement"], t.params["seed_everything"]) for t in trials) == sorted(grid)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both worker processes ran trials"
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert (run / "manifest.json").is_file() and (run / "metrics.json").is_file()
        assert t.value is not None and 0.0 <= t.value <= 1.0
    # Resuming a finished study runs nothing again.
    assert sweep(options) == {"COMPLETE": 4}
    assert len(_trials(url, name)) == 4


@pytest.mark.slow
def test_a_worker_killed_mid_trial_fails_that_trial_and_a_rerun_completes_the_grid(tmp_path, storage):
    import optuna

    url, name = storage
    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, ae, none]}")
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "dep_lightning", "sweep", "--spec", str(path), "--storage", url,
               "--study-name", name, "--root", str(root), "--heartbeat", "1"]
    worker = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # kill it while its second trial runs
            try:
                states = [t.state.name for t in _trials(url, name)]
            except (KeyError, optuna.exceptions.StorageInternalError, Exception):
                states = []
            if states.count("COMPLETE") == 1 and "RUNNING" in states:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the worker never reached its second trial:\n" + (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker only: its trial has a process group of its own
        worker.wait()
    # Past the grace period (2 x 1 s) as the storage measures it: SQLite's CURRENT_TIMESTAMP has
    # whole-second resolution, so a real gap of d seconds can read as floor(d); the trial is stale
    # once the read gap exceeds 2 s, which a real gap of 3 s + 1 s of timestamp truncation ensures.
    time.sleep(4.0)
    trials = _trials(url, name)
    states = sorted(t.state.name for t in trials)
    assert states.count("COMPLETE") == 1 and "RUNNING" in states
    # The killed worker's trial died with it (its child gets SIGKILL when the worker dies): it
    # never completes its run directory behind the study's back.
    orphan = Path(next(t for t in trials if t.state.name == "RUNNING").user_attrs["run_dir"])
    time.sleep(2.0)
    assert not (orphan / "metrics.json").exists()

    from dep_lightning.sweeps.optuna_sweep import SweepOptions, sweep

    counts = sweep(SweepOptions(spec=str(path), storage=url, study_name=name, root=str(root), heartbeat=1))
    assert counts == {"COMPLETE": 3, "FAIL": 1}, counts
    trials = _trials(url, name)
    done = sorted(t.params["model.init_args.refinement"] for t in trials if t.state.name == "COMPLETE")
    assert done == ["ae", "none", "sae"]
    assert not (orphan / "metrics.json").exists()
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4


# -- Optuna trials that are DDP jobs ------------------------------------------------------------
# Before trials ran as child processes, Lightning's DDP launcher re-executed the sweep command
# for rank 1, which claimed another trial and joined rank 0's process group: two trials trained
# as one job and were recorded with the same value.

DDP_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory):
    """A grid over two seeds whose trials are 2-process DDP fits (gloo, tiny models, one step),
    and the sweep metric of a standalone ``fit`` of each point."""
    from dep_lightning.sweeps.runner import metric_value, run_child

    folder = tmp_path_factory.mktemp("ddp_sweep")
    layer = folder / "ddp_small.yaml"
    layer.write_text("trainer: {accelerator: cpu, max_steps: 1, enable_progress_bar: false}\n"
                     "data: {init_args: {eval_batch_size: 2}}\n")
    path = write_sweep(folder, f"  seed_everything: {{values: {list(DDP_SEEDS)}}}", metric="val/loss",
                       goal="minimize", configs=(ROOT / "configs" / "trainer" / "ddp.yaml", layer), limits=(4, 2, 4))
    spec = load_spec(path)
    standalone = {}
    for params in spec.grid():  # one after another: the first also fills the embedding cache
        run_dir = folder / "standalone" / f"seed_{params['seed_everything']}"  # a number would become version_<n>
        assert run_child(spec.cli_args(params) + [f"--run_dir={run_dir}"]) == 0
        standalone[params["seed_everything"]] = metric_value(run_dir, spec.metric)
    return path, standalone


@pytest.mark.slow
def test_two_workers_of_ddp_trials_give_each_trial_its_own_run_and_value(ddp_sweep, storage, tmp_path):
    from dep_lightning.sweeps.optuna_sweep import SweepOptions, sweep

    (path, standalone), (url, name) = ddp_sweep, storage
    counts = sweep(SweepOptions(spec=str(path), storage=url, study_name=name, workers=2, root=str(tmp_path / "runs")))
    assert counts == {"COMPLETE": 2}, counts
    trials = _trials(url, name)
    assert len({t.user_attrs["run_dir"] for t in trials}) == 2
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        config = (run / "config.yaml").read_text()
        assert f"seed_everything: {t.params['seed_everything']}" in config and "devices: 2" in config
        assert (run / "metrics.json").is_file()
        print(f"trial {t.number} seed {t.params['seed_everything']}: {t.value!r} "
              f"standalone {standalone[t.params['seed_everything']]!r}")
        assert t.value == standalone[t.params["seed_everything"]]
    assert len({t.value for t in trials}) == 2, "two points, two values"
