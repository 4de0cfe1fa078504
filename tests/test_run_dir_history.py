"""A later command written into a fit's run directory keeps the training curve; a resumed fit
keeps it too; every command records its stages' wall time."""

import json
from pathlib import Path

import pytest

from dep_lightning.callbacks.history import keep_fit_history


def test_a_fits_metrics_csv_is_kept_once(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.csv").write_text("step,train/loss\n1,2.0\n")
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics-fit.csv").read_text() == "step,train/loss\n1,2.0\n"
    assert not (tmp_path / "metrics.csv").exists()
    (tmp_path / "metrics.csv").write_text("step,test/x\n")  # the later command's own log
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics-fit.csv").read_text() == "step,train/loss\n1,2.0\n"  # not overwritten


def test_a_directory_without_a_fit_is_left_alone(tmp_path):
    (tmp_path / "metrics.csv").write_text("step\n")
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics.csv").exists() and not (tmp_path / "metrics-fit.csv").exists()


def fit_args(tmp_path) -> tuple[list[str], Path]:
    """A tiny fit into one run directory: every step logged, validation every 2 steps and a
    checkpoint at every validation (as the study saves last.ckpt)."""
    from tests.helpers import tiny_override

    root = Path(__file__).resolve().parents[1]
    tiny = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", limits=(8, 2, 2), save_dir=tmp_path / "runs")
    steps = tmp_path / "steps.yaml"
    steps.write_text("trainer:\n  log_every_n_steps: 1\n  val_check_interval: 2\n  callbacks:\n"
                     "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                     "      init_args: {save_top_k: -1, save_last: true}\n")
    run = tmp_path / "runs" / "study" / "point"
    return ["--config", str(root / "configs" / "quickstart.yaml"), "--config", str(tiny), "--config", str(steps),
            "--run_dir", str(run), "--data.init_args.batch_size=1", "--trainer.accumulate_grad_batches=1"], run


def test_fit_time_is_written_per_validation_and_after_the_last_one(tmp_path):
    from dep_lightning.cli import main

    args, run = fit_args(tmp_path)
    main(["fit", *args, "--trainer.max_steps=3"])
    timing = [json.loads(line) for line in (run / "timing.jsonl").read_text().splitlines()]
    assert [(t["stage"], t.get("steps"), t.get("validations"), t.get("global_step"), t.get("step_limit"))
            for t in timing] == [("fit", 2, 1, 2, 3), ("fit", 1, 0, 3, 3), ("test", None, None, None, None)]


def test_a_checkpoint_between_validations_ends_a_timing_segment(tmp_path):
    """``ModelCheckpoint(every_n_train_steps=1)`` with a validation every 2 steps: a line per
    checkpoint (the steps a resume from it keeps), the validation after step 2 a line of its own
    without steps, and no empty line for the checkpoint saved at that validation's end."""
    from dep_lightning.cli import main

    args, run = fit_args(tmp_path)
    every = tmp_path / "every.yaml"
    every.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                     "      init_args: {every_n_train_steps: 1, save_top_k: 1, save_last: true}\n")
    main(["fit", *args, "--config", str(every), "--trainer.max_steps=3"])
    timing = [json.loads(line) for line in (run / "timing.jsonl").read_text().splitlines()]
    assert [(t["stage"], t.get("steps"), t.get("validations"), t.get("global_step")) for t in timing] == \
        [("fit", 1, 0, 1), ("fit", 1, 0, 2), ("fit", 0, 1, 2), ("fit", 1, 0, 3), ("test", None, None, None)]
    assert timing[2]["seconds_per_step"] is None and timing[2]["validation_seconds"] > 0


def test_a_resumed_fit_keeps_the_history_up_to_its_checkpoint(tmp_path, capsys):
    """``fit --ckpt_path last --run_dir D``: the CSV logger deletes ``D/metrics.csv`` when it
    starts; the rows logged up to the checkpoint's step come back, those after it are retrained."""
    import csv

    from dep_lightning.cli import main

    args, run = fit_args(tmp_path)

    def rows() -> list[dict]:
        with (run / "metrics.csv").open(newline="") as handle:
            return [{k: v for k, v in row.items() if v} for row in csv.DictReader(handle)]

    main(["fit", *args, "--trainer.max_steps=2"])
    first = rows()
    # Rows are labeled with the optimizer steps done before them: 0 and 1, and 1 for the validation after 2.
    assert [(r["step"], "val/nll" in r) for r in first] == [("0", False), ("1", False), ("1", True)]
    # An interrupted run logged a row after its last checkpoint (2 steps) before it stopped.
    with (run / "metrics.csv").open("a", newline="") as handle:
        handle.write(",".join("7.5" if key == "train/loss" else ("2" if key == "step" else "")
                              for key in next(csv.reader((run / "metrics.csv").open()))) + "\n")
    capsys.readouterr()
    main(["fit", *args, "--trainer.max_steps=4", "--ckpt_path", "last"])
    out = capsys.readouterr().out
    assert f"[fit] resuming from {run / 'checkpoints' / 'last.ckpt'}" in out
    assert f"[fit] history: {len(first)} row(s) logged before the checkpoint (2 steps) kept in " \
        f"{run / 'metrics.csv'}; 1 logged after it are retrained" in out
    resumed = rows()
    assert resumed[:len(first)] == first  # the first run's rows, value for value
    later = resumed[len(first):]
    assert [(r["step"], "val/nll" in r) for r in later] == [("2", False), ("3", False), ("3", True)]
    assert not any(r.get("train/loss") == "7.5" for r in resumed)  # the row after the checkpoint is gone
    assert not (run / "metrics-before-resume.csv").exists()

    # RunClock: one fit line per command, with that command's steps and validations, and the test after it.
    timing = [json.loads(line) for line in (run / "timing.jsonl").read_text().splitlines()]
    assert [(t["stage"], t.get("steps"), t.get("validations"), t.get("samples")) for t in timing] == \
        [("fit", 2, 1, None), ("test", None, None, 2)] * 2
    for fit in timing[::2]:
        assert 0 < fit["validation_seconds"] < fit["seconds"] and fit["cpu_seconds"] > 0
        assert fit["seconds_per_step"] == pytest.approx((fit["seconds"] - fit["validation_seconds"]) / 2, abs=1e-3)
