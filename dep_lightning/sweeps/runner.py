"""Running one sweep point as an ordinary ``dep-lightning`` run, and reading its result.

Every point of every sweep (Optuna trial, local grid point, W&B agent run) is a normal
run directory (docs/runs.md) placed at ``<root>/<sweep>/<version>`` with ``--run_dir``
(which points the configured loggers there); nothing else about the run changes. Sweeps run
each point as a child process (:func:`run_child`), never in their own process: Lightning's
DDP launcher re-executes ``sys.argv`` for the other ranks, which must be the point's
``dep-lightning fit`` line, not the sweep command.
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def run_dir_args(root: str | Path, name: str, version: str) -> list[str]:
    """Arguments that place a run's directory at ``<root>/<name>/<version>`` (see ``--run_dir``)."""
    return [f"--run_dir={Path(root) / name / version}"]


def point_version(params: dict[str, Any]) -> str:
    """A stable folder name for a grid point: readable values plus a short hash of all of them."""
    payload = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
    readable = "_".join(Path(str(v)).stem if "/" in str(v) else str(v) for v in params.values())
    readable = "".join(c if c.isalnum() or c in "+-." else "-" for c in readable)[:60]
    return f"{readable}-{digest}" if readable else digest


def is_complete(run_dir: Path) -> bool:
    """A run is complete once its test wrote both registry files."""
    return (run_dir / "manifest.json").is_file() and (run_dir / "metrics.json").is_file()


def metric_value(run_dir: Path, metric: str) -> float | None:
    """The sweep metric of a finished run, read from its files (the run was a child process).

    ``test/<name>`` is ``metrics.json``'s overall value. Anything else (``val/meteor``) comes
    from ``metrics.csv`` (the CSV logger's history): the best logged value in the mode of a
    ModelCheckpoint in the run's ``config.yaml`` that monitors it (the score the best
    checkpoint was chosen by), else the last logged value.
    """
    if metric.startswith("test/"):
        path = run_dir / "metrics.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())["overall"].get(metric.split("/", 1)[1])
    history = run_dir / "metrics-fit.csv"
    history = history if history.is_file() else run_dir / "metrics.csv"
    if not history.is_file():
        return None
    with history.open(newline="") as handle:
        logged = [float(row[metric]) for row in csv.DictReader(handle) if row.get(metric) not in (None, "")]
    if not logged:
        return None
    mode = checkpoint_mode(run_dir / "config.yaml", metric)
    return logged[-1] if mode is None else (max(logged) if mode == "max" else min(logged))


def checkpoint_mode(config_path: Path, metric: str) -> str | None:
    """``min`` / ``max`` of a ModelCheckpoint callback monitoring ``metric`` in a run's saved config."""
    if not config_path.is_file():
        return None
    import yaml

    config = yaml.safe_load(config_path.read_text()) or {}
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if not isinstance(callback, dict) or not str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            continue
        init = callback.get("init_args") or {}
        if init.get("monitor") == metric:
            return init.get("mode", "min")
    return None


# torch.distributed's rendezvous variables: a child that inherited them would join the
# parent's process group (or a sibling trial's) instead of forming its own.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                   "NODE_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def child_env(devices: str | None = None, threads: int | None = None,
              defaults: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a run child: no rendezvous variables; with ``devices``
    (a ``CUDA_VISIBLE_DEVICES`` value) the child sees only those GPUs; with ``threads`` its
    CPU thread pools (OpenMP, MKL, torch's intra-op) get that many threads; ``defaults``: variables
    set where this process's environment does not set them."""
    env = {**(defaults or {}), **{k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the process that started it dies, so a
    killed sweep worker does not leave its trial training unrecorded."""
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def start_child(args: list[str], devices: str | None = None, threads: int | None = None,
                output=None, defaults: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m dep_lightning <args>`` as a child process (see :func:`run_child`);
    ``output``: a file its stdout and stderr go to (default: this process's); ``defaults``: as
    :func:`child_env`."""
    return subprocess.Popen([sys.executable, "-m", "dep_lightning", *args],
                            env=child_env(devices, threads, defaults),
                            start_new_session=True, stdout=output, stderr=subprocess.STDOUT if output else None,
                            preexec_fn=_die_with_parent if _LIBC is not None else None)


def stop_child(process: subprocess.Popen) -> None:
    """Kill a child's whole process group if it still runs, and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_child(args: list[str], devices: str | None = None) -> int:
    """Run ``python -m dep_lightning <args>`` as a child process; its exit code.

    The child leads its own process group (a DDP launch adds its other ranks there) and its
    own torch.distributed group (fresh rendezvous, see :data:`DISTRIBUTED_ENV`). When this
    process stops waiting (Ctrl-C, SIGTERM turned into SystemExit) the whole group is killed;
    so is the child when the thread that started it ends (``PR_SET_PDEATHSIG``).
    """
    process = start_child(args, devices)
    try:
        return process.wait()
    finally:
        stop_child(process)


_PARSERS: dict[str, Any] = {}


def cli_parser():
    """The ``dep-lightning`` LightningCLI parser (built once; parsing instantiates nothing)."""
    if "cli" not in _PARSERS:
        from jsonargparse import capture_parser

        from dep_lightning.training import DEPLightningCLI

        _PARSERS["cli"] = capture_parser(lambda: DEPLightningCLI(args=["fit"]))
    return _PARSERS["cli"]


def parse_point(args: list[str]):
    """Validate ``dep-lightning <args>`` without running anything; the subcommand's config.

    Raises ``ValueError`` with the parser's message when the CLI would reject the arguments.
    """
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            config = cli_parser().parse_args(args)
    except SystemExit:
        text = stderr.getvalue()
        text = text[text.find("error:"):] if "error:" in text else text  # drop the usage block
        message = " ".join(line.strip() for line in text.splitlines() if line.strip())
        raise ValueError(f"dep-lightning rejects {' '.join(args)!r}: {message[:2000]}") from None
    return config[args[0]]


def point_key(args: list[str]) -> str:
    """Identity of a run's configuration, independent of where it is written (for dedupe)."""
    config = parse_point(args).clone()
    for key in ("run_dir", "trainer.logger", "trainer.default_root_dir"):
        if key in config:
            config[key] = None
    subparser = cli_parser()._subcommands_action._name_parser_map[args[0]]
    return hashlib.sha256(subparser.dump(config, skip_check=True).encode()).hexdigest()[:16]


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``, SLURM preemption) ends a sweep process like Ctrl-C (``SystemExit``), so
    its cleanup runs: the running children's process groups are killed and what they held is
    released (an Optuna trial marked FAIL, a grid point's lock removed), instead of the
    process vanishing. Ctrl-C itself does not reach a grid started in the background (``&``
    ignores SIGINT), so SIGTERM is how such a grid is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
