"""The ``dep-lightning`` command (also ``python -m dep_lightning``).

Lightning subcommands (LightningCLI, configs with ``class_path`` / ``init_args`` and
omegaconf ``${...}`` interpolation):
  fit | validate | test | predict   train / evaluate DEP (``--config configs/....yaml``)
  score     likelihood of every test reference under counterfactual conditions (true, swap, none, …)

Framework subcommands:
  prepare   any review source -> DPL-format dataset on disk + table-4 statistics
  embed     fill the embedding cache of a run's data alone (``--config`` as fit; all visible devices)
  evaluate  score predictions JSON lines with ROUGE-1 / METEOR / BLEU / BERTScore
  sweep     Optuna study over a sweep file (sqlite or any RDB storage, parallel workers, resumable)
  grid      run a W&B grid sweep file locally, without a W&B server (resumable)
  tables    the paper's tables (Markdown / LaTeX / CSV) and figures from run directories or W&B
  export    copy run directories without checkpoints (metrics, manifests, configs, predictions)
"""

from __future__ import annotations

import sys
import zipfile
from pickle import UnpicklingError

from dep_lightning.data.errors import ConfigError, InputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "score")


def _commands() -> dict:
    from dep_lightning.prepare import prepare

    return {"prepare": prepare}


def _evaluate(argv: list[str]) -> None:
    import argparse

    from dep_lightning.evaluate import evaluate

    parser = argparse.ArgumentParser(prog="dep-lightning evaluate", description=evaluate.__doc__.split("\n")[0])
    parser.add_argument("predictions", nargs="+",
                        help="JSON-lines files (prediction, reference[, sample_id, category])")
    parser.add_argument("--bertscore", action="store_true", help="also compute BERTScore F1 (slow on CPU)")
    parser.add_argument("--out", help="write the scores as JSON to this file")
    parser.add_argument("--union", action="store_true",
                        help="score all files as one set (default: each file on its own, with its own n)")
    args = parser.parse_args(argv)
    evaluate(args.predictions, bertscore=args.bertscore, out=args.out, union=args.union)


def _sweep(argv: list[str]) -> None:
    import argparse

    from dep_lightning.sweeps.optuna_sweep import sweep

    parser = argparse.ArgumentParser(prog="dep-lightning sweep",
                                     description="Optuna study over a sweep file (sweeps/*.yaml, W&B format).")
    parser.add_argument("--spec", required=True, help="sweep file, e.g. sweeps/table3_refinement.yaml")
    parser.add_argument("--storage",
                        help="RDB URL (default: sqlite:///<root>/optuna.db; postgresql://… for many machines)")
    parser.add_argument("--study-name", help="study name (default: the sweep's name)")
    parser.add_argument("--n-trials", type=int, help="trials in the study (grid: default every point)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    parser.add_argument("--devices-per-trial", type=int, metavar="N",
                        help="GPUs per worker: worker i's trials see visible GPUs i*N..i*N+N-1 "
                             "(CUDA_VISIBLE_DEVICES); unset or no GPU: nothing is restricted")
    parser.add_argument("--root", default="runs/sweeps", help="run directories go to <root>/<study>/trial_<n>")
    parser.add_argument("--pruner", choices=("none", "median"), default="none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random / TPE sampler")
    parser.add_argument("--heartbeat", type=int, default=30, help="seconds between trial heartbeats")
    parser.add_argument("--worker-only", action="store_true",
                        help="only claim and run trials of an existing study (extra machines)")
    parser.add_argument("--extra", action="append", default=[], metavar="ARG",
                        help="an extra dep-lightning argument for every trial, e.g. --extra=--trainer.max_epochs=2")
    args = parser.parse_args(argv)
    counts = sweep(args.spec, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials,
                   workers=args.workers, root=args.root, pruner=args.pruner, seed=args.seed,
                   heartbeat=args.heartbeat, worker_only=args.worker_only, extra_args=args.extra,
                   devices_per_trial=args.devices_per_trial)
    print(f"trials: {counts}")


def _grid(argv: list[str]) -> None:
    import argparse

    from dep_lightning.sweeps.local_grid import run_grid

    parser = argparse.ArgumentParser(prog="dep-lightning grid",
                                     description="Run a W&B grid sweep file here, one point after another.")
    parser.add_argument("spec", nargs="+", help="sweep file(s), e.g. sweeps/table3_refinement.yaml")
    parser.add_argument("--root", default="runs/sweeps", help="run directories go to <root>/<sweep>/<point>")
    parser.add_argument("--dry-run", action="store_true", help="print the command lines only")
    parser.add_argument("--extra", action="append", default=[], metavar="ARG",
                        help="an extra dep-lightning argument for every point, "
                             "e.g. --extra=--data.init_args.limit_test=8")
    args = parser.parse_args(argv)
    failed = 0
    for spec in args.spec:
        failed += run_grid(spec, root=args.root, dry_run=args.dry_run, extra_args=args.extra)["failed"]
    if failed:
        raise SystemExit(1)


def _tables(argv: list[str]) -> None:
    import argparse

    from dep_lightning.results.command import make_tables, parse_formats
    from dep_lightning.results.tables import parse_assignments

    parser = argparse.ArgumentParser(prog="dep-lightning tables",
                                     description="Regenerate the paper's tables and figures from run directories.")
    parser.add_argument("--runs", nargs="+", default=[], metavar="DIR",
                        help="folders searched recursively for run directories (manifest.json + metrics.json)")
    parser.add_argument("--out", default="tables", help="output folder (default: tables)")
    parser.add_argument("--format", default="md,latex,csv", help="comma-separated: md, latex, csv")
    parser.add_argument("--reference", help="row the others are tested against: a method (table 1) or a row key "
                                            "such as refinement=ae (ablation tables)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read runs from this W&B project (online)")
    parser.add_argument("--defaults", metavar="KEY=VALUE,...", help="ablation defaults, e.g. k=4,retriever=recency "
                                                                    "(default: the most common value among DEP runs)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--no-figures", action="store_true", help="write tables only")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        parser.error("give --runs DIR... and/or --wandb ENTITY/PROJECT")
    try:
        formats, defaults = parse_formats(args.format), parse_assignments(args.defaults)
    except ValueError as error:
        parser.error(str(error))
    make_tables(args.runs, out=args.out, formats=formats, reference=args.reference, wandb=args.wandb,
                defaults=defaults, resamples=args.resamples, seed=args.seed, figures=not args.no_figures)


def _export(argv: list[str]) -> None:
    import argparse

    from dep_lightning.results.export import export_runs

    parser = argparse.ArgumentParser(prog="dep-lightning export",
                                     description="Copy run directories without checkpoints, for sharing; "
                                                 "`dep-lightning tables --runs OUT` reads the copy.")
    parser.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                        help="folders searched recursively for run directories (manifest.json + metrics.json)")
    parser.add_argument("--out", required=True, help="where the copies go (layout relative to each --runs folder)")
    args = parser.parse_args(argv)
    exported = export_runs(args.runs, args.out)
    print(f"export: {len(exported)} run(s) under {args.out}")


def _embed(argv: list[str]) -> None:
    from dep_lightning.embed import embed
    from dep_lightning.quiet import quiet_framework

    quiet_framework()
    embed(argv)


#: The framework subcommands besides LightningCLI's and jsonargparse's ``prepare``: name ->
#: handler of the arguments after the name (each builds its own parser, so ``--help`` works).
FRAMEWORK_COMMANDS = {"embed": _embed, "evaluate": _evaluate, "sweep": _sweep, "grid": _grid, "tables": _tables,
                      "export": _export}


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
            FRAMEWORK_COMMANDS[argv[0]](argv[1:])
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
