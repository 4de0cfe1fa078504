"""Running one sweep point as an ordinary ``dep-lightning`` run, and reading its result.

Every point of every sweep (Optuna trial, local grid point, W&B agent run) is a normal
run directory (docs/runs.md) placed at ``<root>/<sweep>/<version>`` with ``--run_dir``
(which points the configured loggers there); nothing else about the run changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    run_dir: Path
    value: float | None  # the sweep metric; None when the run did not produce it


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


def metric_value(run_dir: Path, trainer, metric: str) -> float | None:
    """The sweep metric of a finished run.

    ``test/<name>`` reads ``metrics.json``'s overall value; anything else (``val/meteor``)
    is the best score of a ModelCheckpoint monitoring it, else the last logged value.
    """
    if metric.startswith("test/"):
        path = run_dir / "metrics.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())["overall"].get(metric.split("/", 1)[1])
    if trainer is not None:
        for callback in trainer.checkpoint_callbacks:
            if callback.monitor == metric and callback.best_model_score is not None:
                return float(callback.best_model_score)
        value = trainer.callback_metrics.get(metric)
        if value is not None:
            return float(value)
    return None


def run_point(args: list[str], run_dir: Path, metric: str, callbacks: list | None = None) -> RunResult:
    """Run ``dep-lightning <args>`` in this process (``args`` start with the subcommand)."""
    from dep_lightning.training import DEPLightningCLI

    trainer_defaults = {"callbacks": list(callbacks)} if callbacks else {}
    cli = DEPLightningCLI(args=args, trainer_defaults=trainer_defaults)
    actual = Path(cli.trainer.log_dir or run_dir)
    return RunResult(actual, metric_value(actual, cli.trainer, metric))


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
