"""``dep-lightning sweep``: Optuna studies over a sweep file, on any RDB storage.

* The storage is any SQLAlchemy URL: sqlite (one machine, the default) or PostgreSQL /
  MySQL (many machines run ``dep-lightning sweep --worker-only …`` against one database).
* ``method: grid`` sweeps enqueue every grid point not yet run (complete, pruned, waiting
  or running) as a waiting trial; workers claim waiting trials atomically through the
  storage (a trial moves WAITING -> RUNNING once, whoever claims it), so each grid point
  runs exactly once however many workers share the study, and a worker never samples
  extra points. ``random`` / ``bayes`` sweeps sample with Optuna's random / TPE samplers
  until the study holds ``--n-trials`` trials.
* Workers record a heartbeat while a trial runs. A trial whose worker died (killed,
  machine lost) stops beating; the next ``sweep`` call marks it failed and — for grids —
  enqueues the point again, so rerunning the same command completes the grid.
* Pruning uses optuna-integration's Lightning callback on the sweep metric (rank 0
  reports under DDP); ``--pruner median`` enables it.
* Each trial is an ordinary run directory: ``<root>/<study>/trial_<number>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dep_lightning.sweeps.runner import run_dir_args, run_point
from dep_lightning.sweeps.spec import Parameter, SweepSpec, load_spec

FINISHED_OR_ACTIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def default_storage(root: str | Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'optuna.db'}"


def make_storage(url: str, heartbeat_interval: int = 30, grace_period: int | None = None):
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes share the file: wait for locks instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                      grace_period=grace_period or 2 * heartbeat_interval, **kwargs)


def _sampler(spec: SweepSpec, seed: int):
    import optuna

    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "bayes":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every trial is enqueued, the sampler is unused


def _pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be 'median' or 'none', got {name!r}")


def suggest(trial, parameter: Parameter) -> Any:
    if parameter.is_categorical:
        return trial.suggest_categorical(parameter.name, list(parameter.values))
    if parameter.distribution == "int_uniform":
        return trial.suggest_int(parameter.name, int(parameter.low), int(parameter.high))
    if parameter.distribution == "log_uniform_values":
        return trial.suggest_float(parameter.name, parameter.low, parameter.high, log=True)
    return trial.suggest_float(parameter.name, parameter.low, parameter.high, step=parameter.q)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def open_study(spec: SweepSpec, storage, study_name: str, seed: int = 0, pruner: str = "none"):
    import optuna

    direction = "maximize" if spec.goal == "maximize" else "minimize"
    return optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True,
                               sampler=_sampler(spec, seed), pruner=_pruner(pruner))


def prepare_study(spec: SweepSpec, study, n_trials: int | None) -> int:
    """Fail trials whose worker died; for grids, enqueue the points not yet covered. Returns the target count."""
    import optuna

    optuna.storages.fail_stale_trials(study)
    if spec.method != "grid":
        return n_trials or 10
    grid = spec.grid()
    if n_trials is not None:
        grid = grid[:n_trials]
    covered = {_key(t.params or t.system_attrs.get("fixed_params", {}))
               for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED_OR_ACTIVE}
    for params in grid:
        if _key(params) not in covered:
            study.enqueue_trial(params)
    return len(grid)


def _claim_waiting(study, storage) -> int | None:
    """Move one WAITING trial to RUNNING atomically; its id, or None when none is left."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except UpdateFinishedTrialError:
            continue
    return None


@contextmanager
def _heartbeat(storage, trial_id: int) -> Iterator[None]:
    stop = threading.Event()
    interval = storage.get_heartbeat_interval() or 30

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _next_trial(spec: SweepSpec, study, storage, target: int):
    """(trial, trial_id) of the next trial this worker runs, or None when it is done."""
    import optuna
    from optuna.trial import TrialState

    trial_id = _claim_waiting(study, storage)
    if trial_id is None:
        if spec.method == "grid":
            return None
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        if len(study.get_trials(deepcopy=False, states=counted)) >= target:
            return None
        trial_id = storage.create_new_trial(storage.get_study_id_from_name(study.study_name))
    return optuna.Trial(study, trial_id), trial_id


def run_worker(spec: SweepSpec, storage_url: str, study_name: str, root: str, target: int, seed: int = 0,
               pruner: str = "none", heartbeat: int = 30, extra_args: list[str] | None = None) -> int:
    """Claim and run trials until the study has none left for this worker; returns how many ran."""
    import optuna
    from optuna.trial import TrialState

    storage = make_storage(storage_url, heartbeat)
    study = open_study(spec, storage, study_name, seed, pruner)
    ran = 0
    while (claimed := _next_trial(spec, study, storage, target)) is not None:
        trial, trial_id = claimed
        params = {p.name: suggest(trial, p) for p in spec.parameters}
        version = f"trial_{trial.number:04d}"
        args = spec.cli_args(params) + list(extra_args or []) + run_dir_args(root, study_name, version)
        trial.set_user_attr("run_dir", str(Path(root) / study_name / version))
        trial.set_user_attr("args", args)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        print(f"[sweep {study_name}] trial {trial.number}: {' '.join(args)}", flush=True)
        callbacks = []
        if pruner != "none":
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=spec.metric))
        with _heartbeat(storage, trial_id):
            try:
                result = run_point(args, Path(root) / study_name / version, spec.metric, callbacks)
                for callback in callbacks:
                    callback.check_pruned()
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                print(f"[sweep {study_name}] trial {trial.number} pruned", flush=True)
            except Exception as error:  # a failed trial must not stop the other trials
                trial.set_user_attr("error", "".join(traceback.format_exception_only(type(error), error)).strip())
                study.tell(trial, state=TrialState.FAIL)
                print(f"[sweep {study_name}] trial {trial.number} failed: {error}", file=sys.stderr, flush=True)
            else:
                if result.value is None:
                    trial.set_user_attr("error", f"metric {spec.metric!r} was not produced")
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, result.value)
                    print(f"[sweep {study_name}] trial {trial.number}: {spec.metric} = {result.value:.4f}",
                          flush=True)
        ran += 1
    return ran


def summary(study) -> str:
    lines = ["| trial | state | value | params | run |", "|---:|---|---:|---|---|"]
    for t in study.get_trials(deepcopy=False):
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.params.items())
        lines.append(f"| {t.number} | {t.state.name} | {value} | {params} | {t.user_attrs.get('run_dir', '')} |")
    return "\n".join(lines)


def sweep(spec_path: str, storage: str | None = None, study_name: str | None = None, n_trials: int | None = None,
          workers: int = 1, root: str = "runs/sweeps", pruner: str = "none", seed: int = 0, heartbeat: int = 30,
          worker_only: bool = False, extra_args: list[str] | None = None) -> dict[str, int]:
    """Run (or resume) an Optuna study over a sweep file; returns the trial counts by state."""
    spec = load_spec(spec_path)
    storage = storage or default_storage(root)
    study_name = study_name or spec.name
    study = open_study(spec, make_storage(storage, heartbeat), study_name, seed, pruner)
    target = prepare_study(spec, study, n_trials) if not worker_only else (n_trials or len(study.trials))
    print(f"[sweep {study_name}] {spec.method} over {len(spec.parameters)} parameter(s), {target} trial(s), "
          f"{workers} worker(s), storage {storage}", flush=True)
    common = dict(spec=spec, storage_url=storage, study_name=study_name, root=root, target=target, seed=seed,
                  pruner=pruner, heartbeat=heartbeat, extra_args=extra_args)
    if workers <= 1:
        run_worker(**common)
    else:
        command = [sys.executable, "-m", "dep_lightning", "sweep", "--spec", str(spec.path), "--storage", storage,
                   "--study-name", study_name, "--n-trials", str(target), "--root", root, "--pruner", pruner,
                   "--seed", str(seed), "--heartbeat", str(heartbeat), "--worker-only"]
        for arg in extra_args or []:
            command.append(f"--extra={arg}")
        processes = [subprocess.Popen(command) for _ in range(workers)]
        codes = [p.wait() for p in processes]
        if any(codes):
            print(f"[sweep {study_name}] worker exit codes: {codes}", file=sys.stderr, flush=True)
    study = open_study(spec, make_storage(storage, heartbeat), study_name, seed, pruner)
    print(summary(study), flush=True)
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
