"""``dep-lightning sweep``: Optuna studies over a sweep file, on any RDB storage.

* The storage is any SQLAlchemy URL: sqlite (one machine, the default) or PostgreSQL /
  MySQL (many machines run ``dep-lightning sweep --worker-only …`` against one database).
* ``method: grid`` sweeps enqueue every grid point not yet run (complete, pruned, waiting
  or running) as a waiting trial; workers claim waiting trials atomically through the
  storage (a trial moves WAITING -> RUNNING once, whoever claims it), so each grid point
  runs exactly once however many workers share the study, and a worker never samples
  extra points. ``random`` / ``bayes`` sweeps sample with Optuna's random / TPE samplers
  until the study holds ``--n-trials`` trials.
* The options of a sweep are one :class:`SweepOptions`: the command line's options are its
  fields, :func:`sweep` takes it, and the worker processes it starts are the same command
  with the same options (:func:`worker_options`).
* Workers record a heartbeat while a trial runs. A trial whose worker died (killed,
  machine lost) stops beating; the next ``sweep`` call marks it failed and — for grids —
  enqueues the point again, so rerunning the same command completes the grid.
* Each trial is a child process, ``python -m dep_lightning fit … --run_dir=<root>/<study>/trial_<n>``
  (the same runner as ``grid``, :func:`~dep_lightning.sweeps.runner.run_child`): its own
  process group, its own torch.distributed group (a DDP trial's launcher re-executes the
  trial's command line, not the sweep's) and its own run directory. The worker reads the
  trial's value from that directory (:func:`~dep_lightning.sweeps.runner.metric_value`).
* ``--devices-per-trial N`` with ``--workers W`` gives each worker its own N GPUs
  (``CUDA_VISIBLE_DEVICES``, :func:`device_slices`); on a machine without GPUs nothing is set.
* ``--pruner median`` adds :class:`~dep_lightning.sweeps.pruning.TrialPruning` to each trial's
  command line: the child reports the sweep metric after each validation (rank 0 under DDP)
  and stops fit when the pruner says so; the worker then marks the trial PRUNED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal

from dep_lightning.data.errors import ConfigError
from dep_lightning.sweeps.runner import child_env, metric_value, run_child, run_dir_args, sigterm_as_exit
from dep_lightning.sweeps.spec import Parameter, SweepSpec, load_spec
from dep_lightning.sweeps.storage import default_storage, make_pruner, make_storage

FINISHED_OR_ACTIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How to run (or resume, or join) an Optuna study over a sweep file.

    Args:
        spec: sweep file (W&B format), e.g. sweeps/table3_refinement.yaml.
        storage: RDB URL of the study (default: sqlite:///<root>/optuna.db; postgresql+psycopg://…
            for workers on many machines).
        study_name: study name (default: the sweep's name).
        n_trials: trials in the study (grid: default every point, else the first N points;
            random / bayes: default 10).
        workers: parallel worker processes on this machine.
        devices_per_trial: GPUs per worker: worker i's trials see visible GPUs i*N..i*N+N-1
            (CUDA_VISIBLE_DEVICES); unset or no GPU: nothing is restricted.
        root: run directories go to <root>/<study>/trial_<n>.
        pruner: median: stop a trial whose sweep metric is worse than the median of earlier
            trials at the same epoch (after 2 trials).
        seed: seed of the random / TPE sampler.
        heartbeat: seconds between trial heartbeats; a running trial silent for twice as long
            counts as dead (failed, and its grid point enqueued again) at the next sweep call.
        worker_only: only claim and run trials of an existing study (extra machines or jobs).
        extra: an extra dep-lightning argument for every trial, once per argument, e.g.
            --extra=--trainer.max_epochs=2.
    """

    spec: str
    storage: str | None = None
    study_name: str | None = None
    n_trials: int | None = None
    workers: int = 1
    devices_per_trial: int | None = None
    root: str = "runs/sweeps"
    pruner: Literal["none", "median"] = "none"
    seed: int = 0
    heartbeat: int = 30
    worker_only: bool = False
    extra: tuple[str, ...] = ()


def _sampler(spec: SweepSpec, seed: int):
    import optuna

    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "bayes":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every trial is enqueued, the sampler is unused


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
                               sampler=_sampler(spec, seed), pruner=make_pruner(pruner))


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


def claim(storage, trial_id: int) -> bool:
    """Move one trial WAITING -> RUNNING; True for exactly one caller, however many race for it.

    Optuna's own claim (``set_trial_state_values``) reads the row, then writes it: atomic
    where ``SELECT … FOR UPDATE`` locks the row (PostgreSQL, MySQL), but SQLite ignores
    ``FOR UPDATE`` and Python's sqlite3 starts the transaction only at the write, so two
    workers can both read WAITING and both claim. A single conditional ``UPDATE … WHERE
    state = 'WAITING'`` is atomic on every database: writers to one row are serialized
    (PostgreSQL re-checks the condition after the first writer commits; SQLite holds the
    database write lock for the whole statement), so only one sees a changed row.
    """
    from datetime import datetime

    import sqlalchemy
    from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
    from optuna.trial import TrialState

    table = TrialModel.__table__
    statement = (sqlalchemy.update(table)
                 .where(table.c.trial_id == trial_id, table.c.state == TrialState.WAITING)
                 .values(state=TrialState.RUNNING, datetime_start=datetime.now()))
    with storage.engine.begin() as connection:
        if connection.execute(statement).rowcount != 1:
            return False
        # The trial's first heartbeat, in the claim's own transaction: optuna never counts a
        # RUNNING trial without any heartbeat as stale, so a worker that died between its
        # claim and its heartbeat thread's first beat would leave the trial RUNNING forever.
        beat = sqlalchemy.insert(TrialHeartbeatModel.__table__).values(trial_id=trial_id,
                                                                       heartbeat=sqlalchemy.func.now())
        connection.execute(beat)
        return True


def _claim_waiting(study, storage) -> int | None:
    """Claim one WAITING trial of the study (:func:`claim`); its id, or None when none is left."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if claim(storage, trial_id):
            return trial_id
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
        storage.record_heartbeat(trial_id)  # at once: a RUNNING trial without a heartbeat never goes stale
    return optuna.Trial(study, trial_id), trial_id


def run_worker(spec: SweepSpec, options: SweepOptions, target: int, devices: str | None = None) -> int:
    """Claim and run trials until the study has none left for this worker; returns how many ran.

    ``options`` has its storage and study name resolved (:func:`sweep`); ``devices`` is the
    ``CUDA_VISIBLE_DEVICES`` of every trial (None: inherited)."""
    from dep_lightning.sweeps.pruning import pruning_args  # imports Lightning: only workers need it

    study_name, root, pruner = options.study_name, options.root, options.pruner
    storage = make_storage(options.storage, options.heartbeat)
    study = open_study(spec, storage, study_name, options.seed, pruner)
    ran = 0
    with sigterm_as_exit():
        while (claimed := _next_trial(spec, study, storage, target)) is not None:
            trial, trial_id = claimed
            params = {p.name: suggest(trial, p) for p in spec.parameters}
            version = f"trial_{trial.number:04d}"
            run_dir = Path(root) / study_name / version
            args = spec.cli_args(params) + list(options.extra) + run_dir_args(root, study_name, version)
            if pruner != "none":
                args += pruning_args(options.storage, study_name, trial.number, spec.metric, pruner)
            trial.set_user_attr("run_dir", str(run_dir))
            trial.set_user_attr("args", args)
            trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
            if devices is not None:
                trial.set_user_attr("devices", devices)
            print(f"[sweep {study_name}] trial {trial.number}: {' '.join(args)}", flush=True)
            with _heartbeat(storage, trial_id):
                try:
                    code = run_child(args, devices)
                except BaseException:  # interrupted: the child is gone, so is the trial
                    _tell_failed(study, trial, "the sweep worker was interrupted")
                    raise
            _record(spec, study, storage, trial, trial_id, code, run_dir)
            ran += 1
    return ran


def _record(spec: SweepSpec, study, storage, trial, trial_id: int, code: int, run_dir: Path) -> None:
    """Tell the study how a trial's child process ended: PRUNED, FAIL or its value."""
    from optuna.trial import TrialState

    from dep_lightning.sweeps.pruning import PRUNED_AT

    name = study.study_name
    if PRUNED_AT in storage.get_trial(trial_id).user_attrs:
        study.tell(trial, state=TrialState.PRUNED)
        print(f"[sweep {name}] trial {trial.number} pruned", flush=True)
        return
    value = metric_value(run_dir, spec.metric) if code == 0 else None
    if value is None:
        reason = f"exit code {code}" if code != 0 else f"metric {spec.metric!r} was not produced"
        _tell_failed(study, trial, f"{reason} (log: the worker's output; run: {run_dir})")
        return
    study.tell(trial, value)
    print(f"[sweep {name}] trial {trial.number}: {spec.metric} = {value:.4f}", flush=True)


def _tell_failed(study, trial, reason: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("error", reason)
    study.tell(trial, state=TrialState.FAIL)
    print(f"[sweep {study.study_name}] trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def device_slices(visible: list[str], workers: int, per_trial: int | None) -> list[str | None]:
    """Each worker's ``CUDA_VISIBLE_DEVICES``: disjoint runs of ``per_trial`` visible GPUs.

    None for a worker means "set nothing" (no ``--devices-per-trial``, or no GPU: CPU trials)."""
    if workers < 1:
        raise ConfigError("--workers", workers, "at least 1")
    if per_trial is not None and per_trial < 1:
        raise ConfigError("--devices-per-trial", per_trial, "at least 1")
    if per_trial is None or not visible:
        return [None] * workers
    if workers * per_trial > len(visible):
        raise ConfigError("--devices-per-trial", per_trial,
                          f"{workers} worker(s) x {per_trial} GPU(s) need {workers * per_trial}, "
                          f"{len(visible)} visible ({','.join(visible)})")
    return [",".join(visible[w * per_trial:(w + 1) * per_trial]) for w in range(workers)]


def summary(study) -> str:
    lines = ["| trial | state | value | params | run |", "|---:|---|---:|---|---|"]
    for t in study.get_trials(deepcopy=False):
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.params.items())
        lines.append(f"| {t.number} | {t.state.name} | {value} | {params} | {t.user_attrs.get('run_dir', '')} |")
    return "\n".join(lines)


def worker_options(options: SweepOptions, target: int) -> SweepOptions:
    """The options of one worker process that :func:`sweep` starts: the same study (storage
    and name resolved), joined as ``--worker-only`` with its target trial count, on the GPUs
    of its ``CUDA_VISIBLE_DEVICES`` (so it neither slices devices nor starts workers itself)."""
    return replace(options, n_trials=target, workers=1, devices_per_trial=None, worker_only=True)


def sweep(options: SweepOptions) -> dict[str, int]:
    """Run (or resume, or join) an Optuna study over a sweep file.

    Each trial is a child ``dep-lightning fit`` with its own run directory; the study lives in
    the storage, so running the same command again resumes it and another machine joins it
    with ``--worker-only``.

    Returns:
        The study's trial counts by state (``{"COMPLETE": 4}``), also printed last.
    """
    slices = device_slices(visible_gpus() if options.devices_per_trial else [], options.workers,
                           options.devices_per_trial)
    spec = load_spec(options.spec)
    options = replace(options, storage=options.storage or default_storage(options.root),
                      study_name=options.study_name or spec.name)
    name, storage = options.study_name, options.storage
    study = open_study(spec, make_storage(storage, options.heartbeat), name, options.seed, options.pruner)
    target = prepare_study(spec, study, options.n_trials) if not options.worker_only \
        else (options.n_trials or len(study.trials))
    print(f"[sweep {name}] {spec.method} over {len(spec.parameters)} parameter(s), {target} trial(s), "
          f"{options.workers} worker(s), storage {storage}", flush=True)
    if options.workers <= 1:
        run_worker(spec, options, target, devices=slices[0])
    else:
        from dep_lightning.cli import command_line

        command = [sys.executable, "-m", "dep_lightning",
                   *command_line("sweep", options=worker_options(options, target))]
        # A worker's slice is its CUDA_VISIBLE_DEVICES; its trials inherit it.
        processes = [subprocess.Popen(command, env=child_env(devices)) for devices in slices]
        codes = [p.wait() for p in processes]
        if any(codes):
            print(f"[sweep {name}] worker exit codes: {codes}", file=sys.stderr, flush=True)
    study = open_study(spec, make_storage(storage, options.heartbeat), name, options.seed, options.pruner)
    print(summary(study), flush=True)
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    print(f"trials: {counts}", flush=True)
    return counts
