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


def relabel(folder: Path, method: str | None = None, ablation: dict | None = None) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["method"] = method or manifest["method"]
    manifest["ablation"] = {**manifest["ablation"], **(ablation or {})}
    path.write_text(json.dumps(manifest))


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
    # metrics-fit.csv of the committed runs: DEP's test after fit logged at step 256 (2 epochs of
    # 128 steps); the control has no test row, and its last training row reads 131 (132 steps done).
    assert (runs["dep"]["steps"], runs["no_user"]["steps"]) == (256, 132)
    # The control validated once, after 128 steps (its row reads 127).
    assert runs["no_user"]["val_curve"] == [[128, pytest.approx(3.8884239196777344, rel=1e-15)]]
    assert runs["no_user"]["best_step"] == 128 and runs["no_user"]["best_val_nll"] == runs["no_user"]["val_curve"][0][1]
    assert runs["dep"]["best_val_nll"] is not None and runs["dep"]["best_step"] <= runs["dep"]["steps"]
    assert runs["dep"]["timing"] is None  # committed before runs recorded timing.jsonl
    assert runs["dep"]["p_vs_rag"] is None and runs["dep"]["p_vs_dep"] is None  # no RAG run; DEP itself


def test_timing_sums_the_commands_of_a_resumed_run(summary, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    lines = [
        {"stage": "fit", "steps": 54, "seconds": 1300.0, "train_seconds": 1200.0, "validations": 1,
         "validation_seconds": 100.0, "threads": 1, "cpu": "AMD EPYC"},
        {"stage": "fit", "steps": 108, "seconds": 2600.0, "train_seconds": 2400.0, "validations": 2,
         "validation_seconds": 200.0, "threads": 1, "cpu": "AMD EPYC"},  # steps 55-162
        {"stage": "test", "seconds": 300.0, "batches": 12, "samples": 96, "threads": 1, "cpu": "AMD EPYC"},
        {"stage": "score", "seconds": 2607.0, "batches": 327, "samples": 2607, "threads": 1, "cpu": "AMD EPYC"},
    ]
    (folder / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    def steps():
        return summary.training_steps(folder, summary.read_timing(folder))

    def timed():
        return summary.timing(summary.read_timing(folder))

    # Validations after a batch that only accumulated: Lightning labels them with the step count
    # itself (54, 108), not count - 1; the validations' global steps in timing.jsonl are exact.
    (folder / "metrics.csv").write_text("epoch,step,train/loss,val/nll\n0,51,4.0,\n0,54,,3.9\n0,161,3.5,\n"
                                        "0,162,,3.7\n")
    assert steps()["val_curve"] == [[55, 3.9], [163, 3.7]]  # no global steps yet
    for line, step in zip(lines[:2], (54, 162)):
        line["global_step"] = step
    (folder / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert steps() == {"steps": 162, "best_step": 162, "best_val_nll": 3.7, "val_curve": [[54, 3.9], [162, 3.7]]}
    assert "fit_cpu_seconds" not in timed()  # lines written before CPU time was recorded
    for line, cpu in zip(lines[:2], (1190.0, 2390.0)):
        line["cpu_seconds"] = cpu
    (folder / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert timed() == {
        "fit_cpu_seconds": 3580.0, "fit_seconds": 3900.0,
        "steps_timed": 162, "seconds_per_step": round(3600 / 162, 3), "validations": 3, "seconds_per_validation": 100.0,
        "test_seconds": 300.0, "test_seconds_per_sample": 3.125, "score_seconds": 2607.0,
        "score_seconds_per_sample": 1.0, "threads": [1], "cpu": ["AMD EPYC"]}
    # Batches another run had scored (shared) or an interrupted one had: counted, not in the seconds.
    lines[3] |= {"batches_computed": 200, "batches_restored": 18, "batches_shared": 109}
    (folder / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert (timed()["score_batches_restored"], timed()["score_batches_shared"]) == (18, 109)


def test_segments_a_resume_trained_again_are_counted_once(summary, tmp_path):
    """A fit stopped after its step-162 validation resumed from the checkpoint of step 108 (one
    not saved at every validation): the first step-109-162 segment is superseded by the second."""
    segment = {"stage": "fit", "steps": 54, "seconds": 600.0, "train_seconds": 500.0, "validations": 1,
               "validation_seconds": 100.0, "threads": 1, "cpu": "AMD EPYC"}
    lines = [{**segment, "global_step": step} for step in (54, 108, 162)]
    lines += [{**segment, "global_step": 162, "seconds": 700.0, "train_seconds": 600.0},
              {**segment, "global_step": 216}]
    (tmp_path / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    kept = summary.read_timing(tmp_path)
    assert kept == lines[:2] + lines[3:]
    assert summary.timing(kept)["steps_timed"] == 216  # all five lines would count 270


def test_p_vs_rag_and_p_vs_dep_pair_with_the_right_runs(summary, tmp_path):
    """A RAG run and a his-only DEP variant beside the committed runs: every run is paired with RAG,
    the variant with DEP (his+diff, SAE) of its seed and text setting; DEP with itself is None."""
    shutil.copytree(SCORED, tmp_path / "runs")
    for name, change in (("rag", {"method": "rag"}), ("his", {"ablation": {"embeddings": "his"}})):
        shutil.copytree(SCORED / "dep", tmp_path / "runs" / name)
        relabel(tmp_path / "runs" / name, **change)
    runs = {r["run"]: r for r in summary.summarize(tmp_path / "runs")["runs"]}
    # The copies score exactly what DEP scores: a paired test of equal samples gives p = 1.
    assert runs["dep"]["p_vs_rag"] == 1.0 and runs["his"]["p_vs_dep"] == 1.0
    assert runs["rag"]["p_vs_rag"] is None and runs["dep"]["p_vs_dep"] is None
    assert runs["no_user"]["p_vs_dep"] is None  # only DEP variants and PPlug are paired with DEP
    assert 0 < runs["no_user"]["p_vs_rag"] <= 1


def test_the_learning_curve_figure_is_drawn(summary, tmp_path):
    result = summary.summarize(SCORED)
    summary.learning_curve_figure(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_p_vs_no_user_separates_a_clear_difference_from_none(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    control = {}
    for line in (SCORED / "no_user" / "scores" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        control[(row["sample_id"], row["condition"])] = row["nll"]
    # A copy of DEP whose scores are the control's exactly, and one 0.1 nats/token worse on every sample.
    shutil.copytree(tmp_path / "runs" / "dep", tmp_path / "runs" / "same")
    relabel(tmp_path / "runs" / "same", ablation={"embeddings": "his"})  # one study DEP per seed and text setting
    rewrite_scores(tmp_path / "runs" / "same", lambda r: {**r, "nll": control[r["sample_id"], r["condition"]]})
    rewrite_scores(tmp_path / "runs" / "dep", lambda r: {**r, "nll": control[r["sample_id"], r["condition"]]
                                                         + 0.1 * r["tokens"]})
    runs = {r["run"]: r for r in summary.summarize(tmp_path / "runs")["runs"]}
    assert runs["same"]["p_vs_no_user"] == 1.0
    assert runs["dep"]["p_vs_no_user"] == pytest.approx(1 / 1001)  # the smallest p of 1,000 resamples
    # Worse by the same 0.1 under every condition: the swap gain is the control's.
    for name in ("same", "dep"):
        assert runs[name]["gain_vs_no_user"]["delta"] == pytest.approx(0, abs=1e-12)
        assert runs[name]["gain_vs_no_user"]["p_value"] == 1.0
    assert runs["no_user"]["gain_vs_no_user"] is None


def test_gain_vs_no_user_measures_the_extra_swap_gain(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    control = {}
    for line in (SCORED / "no_user" / "scores" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        control[(row["sample_id"], row["condition"])] = row
    # DEP scored as the control, except that the other user's history costs 0.05 nats/token more
    # on every even-numbered sample: a swap gain larger by 0.025 on average.
    order = {sid: k for k, sid in enumerate(sorted({sid for sid, _ in control}))}

    def planted(row):
        extra = 0.05 * row["tokens"] if row["condition"] == "swap" and order[row["sample_id"]] % 2 == 0 else 0.0
        return {**row, "nll": control[row["sample_id"], row["condition"]]["nll"] + extra}

    rewrite_scores(tmp_path / "runs" / "dep", planted)
    runs = {r["run"]: r for r in summary.summarize(tmp_path / "runs")["runs"]}
    plus = runs["dep"]["gain_vs_no_user"]
    n = len(order)
    assert plus["delta"] == pytest.approx(0.05 * ((n + 1) // 2) / n, rel=1e-9)
    assert plus["ci95"][0] < plus["delta"] < plus["ci95"][1]
    assert plus["ci95"][0] > 0.02 and plus["ci95"][1] < 0.03  # binomial half-width ~ 0.05 * 1.96 * 0.5 / sqrt(n)
    assert plus["p_value"] == pytest.approx(1 / 1001)
    # (metrics.json is not rewritten: its gains are the committed runs', not the planted ones.)


def test_two_controls_of_one_seed_and_text_setting_are_refused(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    shutil.copytree(tmp_path / "runs" / "no_user", tmp_path / "runs" / "no_user_again")
    with pytest.raises(ValueError, match="two no-user runs with seed 0"):
        summary.summarize(tmp_path / "runs")


def test_comparisons_pair_the_study_roles_per_seed_and_text_setting(summary, tmp_path):
    """DEP against the control, RAG and its table 2 variants, his against diff: each pair once,
    from the same per-sample values as the runs' own fields; an exact copy differs by 0."""
    shutil.copytree(SCORED, tmp_path / "runs")
    runs = tmp_path / "runs"
    shutil.copytree(runs / "dep", runs / "his")
    relabel(runs / "his", ablation={"embeddings": "his"})
    shutil.copytree(runs / "dep", runs / "diff")
    relabel(runs / "diff", ablation={"embeddings": "diff"})
    rewrite_scores(runs / "diff", lambda r: {**r, "nll": r["nll"] + (0.02 * r["tokens"] if r["condition"] == "true"
                                                                      else 0.0)})
    shutil.copytree(runs / "no_user", runs / "rag")
    relabel(runs / "rag", method="rag", ablation={"with_text": True})
    result = summary.summarize(runs)
    pairs = {(c["a"], c["b"]): c for c in result["comparisons"]}
    assert sorted(pairs) == sorted([("dep", "no_user"), ("dep", "rag"), ("dep", "his"), ("dep", "diff"),
                                    ("his", "diff")])
    entries = {r["run"]: r for r in result["runs"]}
    assert pairs["dep", "no_user"]["gain"] == entries["dep"]["gain_vs_no_user"]
    assert pairs["dep", "no_user"]["nll_true"]["p_value"] == entries["dep"]["p_vs_no_user"]
    # RAG (another text setting, its one run) is B for every setting; its copy is the control's.
    assert pairs["dep", "rag"]["gain"] == pairs["dep", "no_user"]["gain"]
    assert (pairs["dep", "his"]["nll_true"]["delta"], pairs["dep", "his"]["nll_true"]["p_value"]) == (0.0, 1.0)
    # diff: NLL(true) 0.02 worse on every sample, so its swap gain is 0.02 smaller.
    assert pairs["his", "diff"]["nll_true"]["delta"] == pytest.approx(-0.02, rel=1e-6)
    assert pairs["his", "diff"]["nll_true"]["ci95"] == pytest.approx([-0.02, -0.02], rel=1e-6)
    assert pairs["his", "diff"]["gain"]["delta"] == pytest.approx(0.02, rel=1e-6)
    assert pairs["his", "diff"]["gain"]["p_value"] == pytest.approx(1 / 1001)
    assert all(c["n"] == 869 and c["seed"] == 0 and c["with_text"] is False for c in result["comparisons"])
    table = summary.comparisons_table(result)
    assert table.count("\n| 0 | without |") == 5
    assert "| DEP his (SAE) | DEP diff (SAE) | 869 | -0.0200 [-0.0200, -0.0200], p = 0.001 | +0.0200" in table


def test_two_runs_of_one_role_are_refused(summary, tmp_path):
    shutil.copytree(SCORED, tmp_path / "runs")
    for name in ("his", "his_again"):
        shutil.copytree(tmp_path / "runs" / "dep", tmp_path / "runs" / name)
        relabel(tmp_path / "runs" / name, ablation={"embeddings": "his"})
    with pytest.raises(ValueError, match=r"two runs of DEP his \(SAE\) with seed 0"):
        summary.summarize(tmp_path / "runs")
