"""The second edition's summary (scripts/study_summary.py) on the committed scored runs, and on
copies of them whose scores are made equal to or clearly worse than the no-user control's."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCORED = ROOT / "docs" / "results" / "scored" / "runs"


def load_summary_module():
    spec = importlib.util.spec_from_file_location("study_summary", ROOT / "scripts" / "study_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rewrite_scores(folder: Path, change) -> None:
    path = folder / "scores" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(row)) + "\n" for row in rows))


@pytest.fixture(scope="module")
def summary():
    return load_summary_module()


def test_the_committed_scored_runs(summary):
    result = summary.summarize(SCORED)
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"dep", "no_user"}
    for run in runs.values():
        assert run["n"] == 869 and run["whole_split"]  # every Musical Instruments test user
        assert run["nll_swap"] - run["nll_true"] == pytest.approx(run["gain"], rel=1e-9)
        assert run["gain_ci95"][0] <= run["gain"] <= run["gain_ci95"][1]
    assert runs["no_user"]["p_vs_no_user"] is None  # the control itself
    assert 0 < runs["dep"]["p_vs_no_user"] <= 1
    # metrics-fit.csv of the committed runs: 256 and 131 optimizer steps logged.
    assert (runs["dep"]["steps"], runs["no_user"]["steps"]) == (256, 131)
    assert runs["dep"]["best_val_nll"] is not None and runs["dep"]["best_step"] <= runs["dep"]["steps"]


def test_p_vs_no_user_separates_a_clear_difference_from_none(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    control = {}
    for line in (SCORED / "no_user" / "scores" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        control[(row["sample_id"], row["condition"])] = row["nll"]
    # A copy of DEP whose scores are the control's exactly, and one 0.1 nats/token worse on every sample.
    shutil.copytree(tmp_path / "runs" / "dep", tmp_path / "runs" / "same")
    rewrite_scores(tmp_path / "runs" / "same", lambda r: {**r, "nll": control[r["sample_id"], r["condition"]]})
    rewrite_scores(tmp_path / "runs" / "dep", lambda r: {**r, "nll": control[r["sample_id"], r["condition"]]
                                                         + 0.1 * r["tokens"]})
    runs = {r["run"]: r for r in summary.summarize(tmp_path / "runs")["runs"]}
    assert runs["same"]["p_vs_no_user"] == 1.0
    assert runs["dep"]["p_vs_no_user"] == pytest.approx(1 / 1001)  # the smallest p of 1,000 resamples


def test_two_controls_of_one_seed_and_text_setting_are_refused(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    shutil.copytree(tmp_path / "runs" / "no_user", tmp_path / "runs" / "no_user_again")
    with pytest.raises(ValueError, match="two no-user runs with seed 0"):
        summary.summarize(tmp_path / "runs")
