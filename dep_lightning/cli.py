"""The ``dep-lightning`` command (also ``python -m dep_lightning``).

Lightning subcommands (LightningCLI, configs with ``class_path`` / ``init_args`` and
omegaconf ``${...}`` interpolation):
  fit | validate | test | predict   train / evaluate DEP (``--config configs/....yaml``)

Framework subcommands:
  prepare   any review source -> DPL-format dataset on disk + table-4 statistics
  evaluate  score predictions JSON lines with ROUGE-1 / METEOR / BLEU / BERTScore
"""

from __future__ import annotations

import sys

from dep_lightning.data.errors import InputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _commands() -> dict:
    from dep_lightning.prepare import prepare

    return {"prepare": prepare}


def _evaluate(argv: list[str]) -> None:
    import argparse

    from dep_lightning.evaluate import evaluate

    parser = argparse.ArgumentParser(prog="dep-lightning evaluate", description=evaluate.__doc__.split("\n")[0])
    parser.add_argument("predictions", nargs="+", help="JSON-lines files (prediction, reference[, sample_id, category])")
    parser.add_argument("--bertscore", action="store_true", help="also compute BERTScore F1 (slow on CPU)")
    parser.add_argument("--out", help="write the scores as JSON to this file")
    args = parser.parse_args(argv)
    evaluate(args.predictions, bertscore=args.bertscore, out=args.out)


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
    from dep_lightning.training import DEPLightningCLI

    return DEPLightningCLI(args=argv, run=run)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            lightning_cli(argv)
        elif argv and argv[0] == "evaluate":
            _evaluate(argv[1:])
        elif argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            _run(argv)
        else:
            _run(argv)
    except (InputError, FileNotFoundError) as error:
        # Bad input is the user's to fix: a one-line message, not a traceback.
        print(f"dep-lightning: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
