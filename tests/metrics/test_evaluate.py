"""``dep-lightning evaluate`` over one or several files: every row scored once, nothing dropped silently."""

from __future__ import annotations

import json

import pytest

from dep_lightning.cli import main
from dep_lightning.evaluate import evaluate
from dep_lightning.metrics import score_predictions


def row(sample_id, prediction, reference="the strings sound bright and the neck plays fast", category="Tools"):
    return {"sample_id": sample_id, "prediction": prediction, "reference": reference, "category": category}


RUN_A = [row("t/0", "bright strings and a fast neck"), row("t/1", "solid build, good tone"),
         row("t/2", "the neck plays fast")]
RUN_B = [row("t/0", "dull strings"), row("t/1", "solid build"), row("t/2", "plays fast"), row("t/3", "sounds bright")]


def write(path, rows, extra=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    assert info.value.code == 2 and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    return captured.err.strip()


def test_two_files_are_scored_each_on_its_own(tmp_path, capsys):
    # Two runs' files share sample ids: before, the second file's rows were dropped silently.
    a, b = write(tmp_path / "a.jsonl", RUN_A), write(tmp_path / "b.jsonl", RUN_B)
    main(["evaluate", str(a), str(b), "--out", str(tmp_path / "scores.json")])
    out = capsys.readouterr().out
    assert f"{a}: 3 samples" in out and f"{b}: 4 samples" in out
    assert "| overall | 3 |" in out and "| overall | 4 |" in out
    scores = json.loads((tmp_path / "scores.json").read_text())["files"]
    assert {path: s["overall"]["n"] for path, s in scores.items()} == {str(a): 3, str(b): 4}
    assert scores[str(b)]["overall"] == score_predictions(RUN_B, bertscore=False)["overall"]
    assert scores[str(a)]["overall"] != scores[str(b)]["overall"]


def test_union_scores_the_files_as_one_set(tmp_path, capsys):
    first, second = write(tmp_path / "rank0.jsonl", RUN_B[:2]), write(tmp_path / "rank1.jsonl", RUN_B[1:])
    scores = evaluate([str(first), str(second)], union=True)
    assert scores["overall"] == score_predictions(RUN_B, bertscore=False)["overall"]
    assert scores["input"] == {"files": [str(first), str(second)], "samples": 4, "identical_repeats": 1,
                               "blank_lines": 0}
    out = capsys.readouterr().out
    assert f"{first} + {second} (union): 4 samples; 1 identical repeated row(s) counted once" in out
    assert out.count("| overall |") == 1


def test_union_of_two_runs_names_both_lines(tmp_path, capsys):
    a, b = write(tmp_path / "a.jsonl", RUN_A), write(tmp_path / "b.jsonl", RUN_B)
    err = run_cli(["evaluate", "--union", str(a), str(b)], capsys)
    assert err.startswith(f"dep-lightning: error: {b}:1: conflicting duplicate sample_id, field 'prediction', "
                          f"value 'dull strings' (sample_id 't/0' is also on {a}:1 with prediction 'bright")


@pytest.mark.parametrize("field", ["prediction", "reference", "category"])
def test_a_differing_repeat_in_one_file_is_an_error(tmp_path, capsys, field):
    changed = {**RUN_A[1], field: "something else"}
    path = write(tmp_path / "preds.jsonl", [*RUN_A, changed])
    err = run_cli(["evaluate", str(path)], capsys)
    assert err == (f"dep-lightning: error: {path}:4: conflicting duplicate sample_id, field {field!r}, value "
                   f"'something else' (sample_id 't/1' is also on {path}:2 with {field} {RUN_A[1][field]!r})")


def test_identical_repeats_count_once_and_are_reported(tmp_path, capsys):
    # DDP padding repeats whole rows; per-sample fields such as scores may differ.
    padded = [*RUN_A, {**RUN_A[0], "scores": {"rouge1": 0.5}}, RUN_A[2]]
    path = write(tmp_path / "preds.jsonl", padded, extra="\n   \n")
    scores = evaluate([str(path)])
    assert scores["overall"] == score_predictions(RUN_A, bertscore=False)["overall"]
    assert scores["input"] == {"files": [str(path)], "samples": 3, "identical_repeats": 2, "blank_lines": 2}
    assert "3 samples; 2 identical repeated row(s) counted once; 2 blank line(s)" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"], ids=["empty", "blank lines"])
def test_an_empty_predictions_file_is_an_error(tmp_path, capsys, content):
    good, empty = write(tmp_path / "good.jsonl", RUN_A), tmp_path / "empty.jsonl"
    empty.write_text(content)
    for argv in (["evaluate", str(empty)], ["evaluate", str(good), str(empty)],
                 ["evaluate", "--union", str(good), str(empty)]):
        err = run_cli(argv, capsys)
        assert err == (f"dep-lightning: error: {empty}: empty file, value 'no rows' "
                       "(expected JSON lines with prediction and reference)")


def test_a_file_given_twice_is_an_error(tmp_path, capsys):
    path = write(tmp_path / "preds.jsonl", RUN_A)
    err = run_cli(["evaluate", str(path), str(tmp_path / "." / "preds.jsonl")], capsys)
    assert err.startswith(f"dep-lightning: error: {tmp_path / '.' / 'preds.jsonl'}: file given twice")


@pytest.mark.parametrize("line,field,kind", [
    ("[1, 2]", None, "malformed JSON"),
    (json.dumps({**RUN_A[0], "sample_id": ["t", 0]}), "sample_id", "wrong type"),
    (json.dumps({**RUN_A[0], "category": 7}), "category", "wrong type"),
])
def test_rows_that_cannot_be_keyed_are_bad_input(tmp_path, capsys, line, field, kind):
    path = write(tmp_path / "preds.jsonl", RUN_A[1:], extra=line + "\n")
    err = run_cli(["evaluate", str(path)], capsys)
    assert err.startswith(f"dep-lightning: error: {path}:3: {kind}" + (f", field {field!r}" if field else ""))
