"""The `dep-lightning` command table: every subcommand is documented and answers --help, and the
framework commands' options (built from their functions' signatures) keep the documented spellings."""

import re

import pytest

from dep_lightning import cli
from dep_lightning.sweeps.optuna_sweep import SweepOptions, worker_options

#: Commands whose options come from a function's signature (``embed`` parses fit's configs).
SIGNATURE_COMMANDS = sorted(name for name, command in cli.FRAMEWORK_COMMANDS.items() if not command.own_parser)


def documented() -> set[str]:
    return set(re.findall(r"^  (\w+)\s", cli.__doc__, flags=re.MULTILINE))


def test_every_subcommand_is_in_the_help_text():
    names = set(cli.FRAMEWORK_COMMANDS) | {"prepare"}
    assert names <= documented(), names - documented()
    assert "score" in documented() and "fit" in cli.__doc__


@pytest.mark.parametrize("name", sorted(cli.FRAMEWORK_COMMANDS))
def test_every_framework_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("name", SIGNATURE_COMMANDS)
def test_help_shows_every_option_with_its_docstring_line(name, capsys):
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for option in cli.options(cli.FRAMEWORK_COMMANDS[name].function()):
        assert (option.name if option.positional else option.flag) in shown
        assert option.help.rstrip(".")[:40] in shown, (option.name, option.help)


# The spellings README.md, docs/, the Makefile, sweeps/*.yaml and scripts/gpu_check.sh use.
DOCUMENTED_SPELLINGS = [
    ("sweep", ["--spec", "sweeps/k_sweep.yaml", "--workers", "4", "--devices-per-trial", "2",
               "--extra=--config=configs/trainer/ddp.yaml", "--extra=--trainer.accelerator=gpu"],
     {"options": SweepOptions(spec="sweeps/k_sweep.yaml", workers=4, devices_per_trial=2,
                              extra=("--config=configs/trainer/ddp.yaml", "--trainer.accelerator=gpu"))}),
    ("sweep", ["--spec", "sweeps/k_sweep.yaml", "--storage", "postgresql+psycopg://user@host/db", "--worker-only",
               "--study-name", "k", "--n-trials", "2", "--root", "/shared/runs/sweeps", "--heartbeat", "60",
               "--pruner", "median", "--seed", "3"],
     {"options": SweepOptions(spec="sweeps/k_sweep.yaml", storage="postgresql+psycopg://user@host/db",
                              worker_only=True, study_name="k", n_trials=2, root="/shared/runs/sweeps", heartbeat=60,
                              pruner="median", seed=3)}),
    ("grid", ["sweeps/study/methods.yaml", "sweeps/study/table2.yaml", "--root", "runs/study", "--dry-run",
              "--extra=--data.init_args.limit_test=8"],
     {"spec": ["sweeps/study/methods.yaml", "sweeps/study/table2.yaml"], "root": "runs/study", "dry_run": True,
      "extra": ["--data.init_args.limit_test=8"]}),
    ("tables", ["--runs", "docs/results/runs", "docs/results/long/runs", "--out", "docs/results/long/tables/vs_rag",
                "--reference", "rag", "--no-figures", "--format", "md,csv", "--defaults", "k=4,retriever=recency",
                "--wandb", "entity/project", "--resamples", "100", "--seed", "1"],
     {"runs": ["docs/results/runs", "docs/results/long/runs"], "out": "docs/results/long/tables/vs_rag",
      "reference": "rag", "figures": False, "format": "md,csv", "defaults": "k=4,retriever=recency",
      "wandb": "entity/project", "resamples": 100, "seed": 1}),
    ("evaluate", ["run/predictions/test.jsonl", "other.jsonl.gz", "--union", "--bertscore", "--out", "scores.json"],
     {"predictions": ["run/predictions/test.jsonl", "other.jsonl.gz"], "union": True, "bertscore": True,
      "out": "scores.json"}),
    ("export", ["--runs", "runs/study", "--out", "docs/results/runs"],
     {"runs": ["runs/study"], "out": "docs/results/runs"}),
]


@pytest.mark.parametrize("name, argv, expected", DOCUMENTED_SPELLINGS, ids=lambda v: v if isinstance(v, str) else "")
def test_documented_spellings_parse_to_the_functions_arguments(name, argv, expected):
    assert cli.parse_command(name, argv) == expected


def test_only_what_is_given_is_passed_so_the_functions_defaults_apply():
    assert cli.parse_command("tables", ["--runs", "runs"]) == {"runs": ["runs"]}
    assert cli.parse_command("sweep", ["--spec", "s.yaml"]) == {"options": SweepOptions(spec="s.yaml")}


def test_list_options_take_several_items_or_repeat():
    assert cli.parse_command("tables", ["--runs", "a", "--runs", "b", "c"])["runs"] == ["a", "b", "c"]
    assert cli.parse_command("export", ["--runs=a", "--out", "o"])["runs"] == ["a"]


def test_underscored_options_are_the_dashed_ones():
    dashed = ["--spec", "s.yaml", "--study-name", "x", "--n-trials=3", "--devices-per-trial", "1", "--worker-only"]
    underscored = ["--spec", "s.yaml", "--study_name", "x", "--n_trials=3", "--devices_per_trial", "1", "--worker_only"]
    assert cli.parse_command("sweep", underscored) == cli.parse_command("sweep", dashed)
    assert cli.parse_command("tables", ["--runs", "r", "--no_figures"])["figures"] is False
    assert cli.parse_command("grid", ["s.yaml", "--dry_run"])["dry_run"] is True
    # A value is never rewritten, only an option's name.
    assert cli.parse_command("grid", ["s.yaml", "--extra=--run_dir=x"])["extra"] == ["--run_dir=x"]


def test_a_sweep_worker_command_line_parses_back_to_the_same_options():
    options = SweepOptions(spec="sweeps/k_sweep.yaml", storage="sqlite:////tmp/optuna.db", study_name="k",
                           workers=3, devices_per_trial=2, root="runs/k", pruner="median", seed=4, heartbeat=5,
                           extra=("--config=configs/trainer/ddp.yaml", "--trainer.max_epochs=2"))
    worker = worker_options(options, target=12)
    line = cli.command_line("sweep", options=worker)
    assert line[0] == "sweep" and "--worker-only" in line and "--n-trials=12" in line
    assert cli.parse_command("sweep", line[1:]) == {"options": worker}
    assert worker.workers == 1 and worker.devices_per_trial is None  # its GPUs are its CUDA_VISIBLE_DEVICES


@pytest.mark.parametrize("name, argv", [
    ("sweep", []),                                            # --spec is required
    ("sweep", ["--spec", "s.yaml", "--n-trials", "many"]),
    ("sweep", ["--spec", "s.yaml", "--pruner", "hyperband"]),
    ("grid", []),
    ("evaluate", []),
    ("export", ["--runs", "runs"]),                           # --out is required
    ("tables", ["--runs", "runs", "--figures"]),
])
def test_arguments_the_parser_rejects_exit_2(name, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, says", [
    (["tables"], "--runs"),
    (["tables", "--runs", "runs", "--format", "md,pdf"], "unknown format 'pdf'"),
    (["tables", "--runs", "runs", "--defaults", "k"], "expected key=value"),
    (["tables", "--runs", "runs", "--resamples", "0"], "--resamples"),
    (["sweep", "--spec", "s.yaml", "--workers", "0"], "--workers"),
    (["sweep", "--spec", "nowhere/sweep.yaml"], "nowhere/sweep.yaml"),
])
def test_values_that_cannot_work_give_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


def test_an_undocumented_parameter_is_refused_when_the_parser_is_built():
    def command(runs: list[str], out: str = "tables") -> None:
        """Make tables.

        Args:
            runs: folders.
        """

    with pytest.raises(TypeError, match="'out' has no line in the docstring"):
        cli.options(command)
