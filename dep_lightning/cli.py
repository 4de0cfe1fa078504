"""The ``dep-lightning`` command (also ``python -m dep_lightning``).

Lightning subcommands (LightningCLI, configs with ``class_path`` / ``init_args`` and
omegaconf ``${...}`` interpolation):
  fit | validate | test | predict   train / evaluate DEP (``--config configs/....yaml``)
  score     likelihood of every test reference under counterfactual conditions (true, swap, none, …)

Framework subcommands (``prepare`` and ``embed`` parse configs with jsonargparse; the others
take the options of the function they call, from its typed signature and ``Args:`` docstring):
  prepare   any review source -> DPL-format dataset on disk + table-4 statistics
  embed     fill the embedding cache of a run's data alone (``--config`` as fit; all visible devices)
  evaluate  score predictions JSON lines with ROUGE-1 / METEOR / BLEU / BERTScore
  sweep     Optuna study over a sweep file (sqlite or any RDB storage, parallel workers, resumable)
  grid      run a W&B grid sweep file locally, without a W&B server (resumable)
  tables    the paper's tables (Markdown / LaTeX / CSV) and figures from run directories or W&B
  export    copy run directories without checkpoints (metrics, manifests, configs, predictions)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import types
import typing
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError
from typing import Any, Callable, Literal

from dep_lightning.data.errors import ConfigError, InputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "score")


def _commands() -> dict:
    from dep_lightning.prepare import prepare

    return {"prepare": prepare}


@dataclass(frozen=True)
class Command:
    """One framework subcommand: the function it calls, as ``"module:function"``.

    The module is imported only when the command runs, so ``dep-lightning --help`` and
    every other command stay free of its imports. The function's typed signature and the
    ``Args:`` section of its docstring are the command's options and their help
    (:func:`command_parser`): an option is declared once, where it is used. ``own_parser``
    commands instead receive the raw arguments (``embed`` reads fit's configs through
    LightningCLI).
    """

    target: str
    own_parser: bool = False

    def function(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


#: The framework subcommands besides LightningCLI's and jsonargparse's ``prepare``.
FRAMEWORK_COMMANDS = {
    "embed": Command("dep_lightning.embed:embed", own_parser=True),
    "evaluate": Command("dep_lightning.evaluate:evaluate"),
    "sweep": Command("dep_lightning.sweeps.optuna_sweep:sweep"),
    "grid": Command("dep_lightning.sweeps.local_grid:grid"),
    "tables": Command("dep_lightning.results.command:tables"),
    "export": Command("dep_lightning.results.command:export"),
}


# -- options from a signature -----------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One parameter of a command's function, as the command line spells it.

    A parameter without a default that may be passed by position is a positional argument;
    every other parameter is ``--name`` (dashed; ``--name_with_underscores`` is accepted too,
    as LightningCLI spells its options). A parameter typed as a dataclass contributes its
    fields (``group`` names the parameter), so options shared by several entry points are
    declared once, in that dataclass.
    """

    name: str
    annotation: Any
    default: Any
    positional: bool
    help: str
    group: str | None = None

    @property
    def flag(self) -> str:
        if self.annotation is bool and self.default is True:
            return "--no-" + self.name.replace("_", "-")
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _documented(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description of a function (or dataclass) and the help of each parameter, from its docstring."""
    import docstring_parser

    doc = docstring_parser.parse(inspect.getdoc(function) or "")
    description = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    return description, {param.arg_name: " ".join((param.description or "").split()) for param in doc.params}


def options(function: Callable[..., Any]) -> list[Option]:
    """The command-line options of ``function``, from its signature and ``Args:`` docstring.

    Every option needs a line in ``Args:``: an undocumented parameter is a ``TypeError``
    when the parser is built, so ``--help`` never shows an option without its meaning.
    """
    found = []
    hints = typing.get_type_hints(function)
    _, helps = _documented(function)
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name)
        if dataclasses.is_dataclass(annotation):
            found += [dataclasses.replace(field, group=parameter.name) for field in options(annotation)]
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{getattr(function, '__qualname__', function)}: *{parameter.name} cannot be "
                            "an option; name each parameter")
        if parameter.name not in helps:
            raise TypeError(f"{getattr(function, '__qualname__', function)}: parameter {parameter.name!r} "
                            "has no line in the docstring's Args section (it is the option's help)")
        positional = (parameter.default is inspect.Parameter.empty
                      and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD))
        found.append(Option(parameter.name, annotation, parameter.default, positional, helps[parameter.name]))
    return found


def _shape(annotation: Any) -> tuple[Any, bool]:
    """``(item type, is a list)`` of an option's annotation, ``None`` (an unset default) taken off."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return _shape(members[0])
    elif origin in (list, tuple, Sequence):
        item, *_ = typing.get_args(annotation) or (Any,)
        if item in (str, int, float, Path):
            return item, True
    elif origin is Literal or annotation in (str, int, float, bool, Path):
        return annotation, False
    raise TypeError(f"no command-line spelling for the type {annotation}")


def _add(parser: argparse.ArgumentParser, option: Option) -> None:
    kind, many = _shape(option.annotation)
    kwargs: dict[str, Any] = {"help": option.help.replace("%", "%%")}
    if typing.get_origin(kind) is Literal:
        kwargs["choices"] = typing.get_args(kind)
        kind = type(kwargs["choices"][0])
    if option.positional:
        parser.add_argument(option.name, nargs="+" if many else None, type=kind, **kwargs)
        return
    # Absent options stay out of the namespace, so the function's own defaults apply.
    kwargs.update(dest=option.name, default=argparse.SUPPRESS)
    if kind is bool:
        kwargs["action"] = "store_false" if option.default is True else "store_true"
    else:
        kwargs.update(type=kind, required=option.required)
        # Items follow the option (``--runs A B``) or repeat it (``--extra=--x --extra=--y``):
        # items that are themselves options can only be given the second way.
        if many:
            kwargs.update(nargs="+", action="extend")
        if not option.required and option.default not in (None, (), []):
            kwargs["help"] = kwargs["help"].rstrip(".") + f" (default: {option.default})"
    parser.add_argument(option.flag, **kwargs)


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``dep-lightning <name>``, built from its function's signature."""
    function = FRAMEWORK_COMMANDS[name].function()
    parser = argparse.ArgumentParser(prog=f"dep-lightning {name}", description=_documented(function)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in options(function):
        _add(parser, option)
    return parser


def _dashed(argv: list[str], flags: set[str]) -> list[str]:
    """``argv`` with ``--study_name`` spelled ``--study-name`` (one of ``flags``): LightningCLI's
    options are underscored (``--run_dir``) and the framework's dashed; either spelling works here."""
    out = []
    for index, token in enumerate(argv):
        if token == "--":  # what follows is values only
            return out + argv[index:]
        name, equals, value = token.partition("=")
        dashed = name.replace("_", "-")
        out.append(dashed + equals + value if name.startswith("--") and dashed in flags else token)
    return out


def parse_command(name: str, argv: list[str]) -> dict[str, Any]:
    """The keyword arguments that ``dep-lightning <name> <argv>`` calls its function with.

    Only what ``argv`` gives is there (the function's defaults apply to the rest); a
    dataclass parameter is built from its fields. Bad arguments exit like argparse (usage,
    one ``error:`` line, status 2).
    """
    function = FRAMEWORK_COMMANDS[name].function()
    found = options(function)
    given = vars(command_parser(name).parse_args(_dashed(argv, {option.flag for option in found})))
    arguments: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for option in found:
        into = groups.setdefault(option.group, {}) if option.group else arguments
        if option.name in given:
            value = given[option.name]
            into[option.name] = tuple(value) if typing.get_origin(option.annotation) is tuple else value
    hints = typing.get_type_hints(function)
    arguments.update({group: hints[group](**fields) for group, fields in groups.items()})
    return arguments


def run_command(name: str, argv: list[str]) -> Any:
    """Run ``dep-lightning <name>`` with ``argv`` (the arguments after the name)."""
    command = FRAMEWORK_COMMANDS[name]
    if command.own_parser:
        return command.function()(argv)
    return command.function()(**parse_command(name, argv))


def command_line(name: str, **arguments: Any) -> list[str]:
    """The arguments of ``dep-lightning <name>`` that call its function with ``arguments``.

    The inverse of :func:`parse_command`, for a process that starts the same command again
    (``sweep`` workers): values equal to the default are left out; a dataclass parameter is
    given as its instance.
    """
    argv = [name]
    for option in options(FRAMEWORK_COMMANDS[name].function()):
        if option.group:
            value = getattr(arguments[option.group], option.name)
        else:
            value = arguments.get(option.name, option.default)
        kind, many = _shape(option.annotation)
        if not option.required and (list(value) == list(option.default) if many else value == option.default):
            continue
        if option.positional:
            argv += [str(item) for item in value] if many else [str(value)]
        elif kind is bool:
            argv.append(option.flag)
        elif value is None:
            raise ValueError(f"{name} {option.flag}: None cannot be spelled (its default is {option.default!r})")
        else:
            argv += [f"{option.flag}={item}" for item in value] if many else [f"{option.flag}={value}"]
    return argv


def _run(argv: list[str]):
    from jsonargparse import CLI

    # Source classes must be importable by short name (``--source FiveCoreSource``).
    import dep_lightning.data.sources  # noqa: F401

    return CLI(_commands(), args=argv, parser_mode="omegaconf", as_positional=False)


def build_parser():
    """The argument parser of the non-Lightning subcommands (used by tests to parse configs)."""
    from jsonargparse import capture_parser

    return capture_parser(lambda: _run([]))


def lightning_cli(argv: list[str] | None, run: bool = True):
    from dep_lightning.safety import check_checkpoint_path, unreadable_checkpoint
    from dep_lightning.training import DEPLightningCLI

    class CheckedCLI(DEPLightningCLI):
        """Checks ``--ckpt_path`` before Lightning reads any data or loads the file
        (``safety.check_checkpoint_path``); for fit also once ``last`` is resolved."""

        def _parse_ckpt_path(self) -> None:
            # LightningCLI loads the file here, while parsing, to read its hyperparameters.
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
            check_checkpoint_path(ckpt_path)
            try:
                super()._parse_ckpt_path()
            except (RuntimeError, UnpicklingError, UnicodeDecodeError, EOFError, zipfile.BadZipFile) as error:
                # The layout passed but the contents do not load (what torch.load raises for a
                # damaged zip member, bytes that are no pickle, or objects weights_only refuses).
                raise unreadable_checkpoint(ckpt_path, error) from error

        def _check_ckpt(self) -> None:
            check_checkpoint_path(self.config_init[self.subcommand].get("ckpt_path"))

        def before_fit(self) -> None:
            self._check_ckpt()
            super().before_fit()
            self._check_ckpt()

        def before_validate(self) -> None:
            self._check_ckpt()
            super().before_validate()

        before_test = before_predict = before_score = before_validate

    return CheckedCLI(args=argv, run=run)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from dep_lightning.quiet import quiet_framework

            quiet_framework()  # framework messages that never apply to a dep-lightning run (quiet.py)
            lightning_cli(argv)
        elif argv and argv[0] in FRAMEWORK_COMMANDS:
            run_command(argv[0], argv[1:])
        elif argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            _run(argv)
        else:
            _run(argv)
    except Exception as error:
        # Bad input and unusable settings are the user's to fix: a one-line message, not a
        # traceback. Only these: any other exception is a bug and keeps its traceback.
        found = user_error(error)
        if found is None:
            raise
        print(f"dep-lightning: error: {found}", file=sys.stderr)
        raise SystemExit(2) from None


def user_error(error: BaseException) -> Exception | None:
    """The input or configuration error behind ``error``, or None for anything else (a bug).

    jsonargparse re-raises an error from a class's ``__init__`` (e.g. a :class:`ConfigError`
    of the data module) as its own ``ValueError`` with the original as ``__cause__``; only
    that explicit chain is followed, so a bug raised while handling an input error is not taken for one.
    """
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, (InputError, ConfigError, FileNotFoundError)):
            return error
        error, seen = error.__cause__, seen + 1
    return None
