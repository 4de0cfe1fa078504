"""Sweep files: W&B's sweep format, read by both sweep runners.

One file format serves ``wandb sweep sweeps/<name>.yaml`` (a W&B server runs it),
``dep-lightning grid sweeps/<name>.yaml`` (the grid expanded and run locally, no server)
and ``dep-lightning sweep --spec sweeps/<name>.yaml`` (Optuna, any RDB storage)::

    name: table3_refinement
    method: grid                      # grid | random | bayes
    metric: {name: val/meteor, goal: maximize}
    parameters:
      model.init_args.refinement: {values: [sae, ae, none]}
      seed_everything: {values: [0, 1]}
      model.init_args.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
    command: [${env}, dep-lightning, fit, --config, configs/quickstart.yaml, ${args}]

``${args}`` expands, as W&B does, to one ``--<name>=<value>`` per parameter (in the
file's order). Parameter names are LightningCLI keys; ``config`` is the ``--config``
option itself, so a parameter can layer a whole config file (the baselines sweep).
Supported distributions: ``values``, ``value``, ``uniform``, ``log_uniform_values``,
``int_uniform``, ``q_uniform``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dep_lightning.data.errors import InputError

MACROS_DROPPED = ("${env}", "${interpreter}")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


@dataclass(frozen=True)
class Parameter:
    name: str
    values: tuple[Any, ...] | None = None  # categorical / grid
    distribution: str | None = None
    low: float | None = None
    high: float | None = None
    q: float | None = None

    @property
    def is_categorical(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    method: str
    metric: str
    goal: str
    parameters: tuple[Parameter, ...]
    command: tuple[str, ...]

    @property
    def subcommand(self) -> str:
        return self.command[self.command.index("dep-lightning") + 1]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the categorical parameters, in file order (grid method)."""
        loose = [p.name for p in self.parameters if not p.is_categorical]
        if loose:
            raise InputError(str(self.path), None, "parameters", loose, "not a grid",
                             "a grid sweep needs `values` (or `value`) for every parameter")
        names = [p.name for p in self.parameters]
        return [dict(zip(names, combo)) for combo in itertools.product(*(p.values for p in self.parameters))]

    def cli_args(self, params: dict[str, Any]) -> list[str]:
        """The ``dep-lightning`` arguments (after the program name) with ``${args}`` expanded."""
        out: list[str] = []
        for token in self.command[self.command.index("dep-lightning") + 1:]:
            if token == "${args}":
                out += [f"--{name}={format_value(value)}" for name, value in params.items()]
            elif token == "${args_no_hyphens}":
                out += [f"{name}={format_value(value)}" for name, value in params.items()]
            else:
                out.append(token)
        return out


def format_value(value: Any) -> str:
    """A value as W&B writes it into ``${args}`` (booleans as true/false, None as null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _fail(path: Path, field: str, value: Any, reason: str) -> InputError:
    return InputError(str(path), None, field, value, "bad sweep file", reason)


def _parameter(path: Path, name: str, body: Any) -> Parameter:
    field = f"parameters.{name}"
    if not _NAME.match(name):
        raise _fail(path, field, name, "parameter names are LightningCLI keys such as model.init_args.lr")
    if not isinstance(body, dict):
        raise _fail(path, field, body, "expected a mapping with `values`, `value` or a distribution")
    if "values" in body:
        values = body["values"]
        if not isinstance(values, list) or not values:
            raise _fail(path, field + ".values", values, "expected a non-empty list")
        return Parameter(name, values=tuple(values))
    if "value" in body:
        return Parameter(name, values=(body["value"],))
    distribution = body.get("distribution", "uniform" if {"min", "max"} <= set(body) else None)
    if distribution not in DISTRIBUTIONS:
        raise _fail(path, field + ".distribution", distribution,
                    f"supported: values, value, {', '.join(DISTRIBUTIONS)}")
    try:
        low, high = float(body["min"]), float(body["max"])
    except (KeyError, TypeError, ValueError):
        raise _fail(path, field, body, f"{distribution} needs numeric min and max") from None
    if not low < high or (distribution == "log_uniform_values" and low <= 0):
        raise _fail(path, field, body, "needs min < max (and min > 0 for log_uniform_values)")
    q = body.get("q")
    return Parameter(name, distribution=distribution, low=low, high=high, q=float(q) if q is not None else None)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; errors name the file, field and value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        raise InputError(str(path), None if line is None else line + 1, None, None, "malformed YAML",
                         str(error).splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise _fail(path, "<root>", raw, "expected a mapping")
    method = raw.get("method")
    if method not in ("grid", "random", "bayes"):
        raise _fail(path, "method", method, "expected grid, random or bayes")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise _fail(path, "metric.name", metric, "expected e.g. {name: val/meteor, goal: maximize}")
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise _fail(path, "metric.goal", goal, "expected maximize or minimize")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise _fail(path, "parameters", parameters, "expected a non-empty mapping")
    command = raw.get("command")
    if (not isinstance(command, list) or "dep-lightning" not in command or "${args}" not in command
            or command.index("dep-lightning") + 1 >= len(command)):
        raise _fail(path, "command", command, "expected a list with dep-lightning, a subcommand and ${args}")
    command = [str(c) for c in command if c not in MACROS_DROPPED]
    return SweepSpec(path=path, name=str(raw.get("name") or path.stem), method=method, metric=metric["name"],
                     goal=goal, parameters=tuple(_parameter(path, str(k), v) for k, v in parameters.items()),
                     command=tuple(command))
