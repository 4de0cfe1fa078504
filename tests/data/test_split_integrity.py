"""Split integrity at read time (issue 20 item 3): DPL files, ours or published, are checked
as they are read — a user twice in a split, a target in its own profile or in an earlier
split's profile, a profile out of time order or after its target, seconds where
milliseconds belong, an empty split. Each is an error under ``on_error="raise"`` and a
counted skip under ``"skip"``."""

import json

import pytest

from dep_lightning.cli import main as cli_main
from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.readers.dpl import load_dpl, write_dpl
from dep_lightning.data.sources import DPLSource
from tests.helpers import small_data, small_datamodule

T0 = 1_600_000_000_000  # 2020-09-13, in milliseconds


def review(asin, ts, text=None):
    return {"rating": 4.0, "title": "t", "text": text or f"my review of {asin}", "asin": asin, "timestamp": ts}


def row(user, target="B9", profile=("B1", "B2"), target_ts=T0 + 9000, **changes):
    """A valid row; ``profile`` is item ids (one second apart, in order) or review dicts as given."""
    profile = [a if isinstance(a, dict) else review(a, T0 + 1000 * (i + 1)) for i, a in enumerate(profile)]
    record = {"user_id": user, "profile": profile, "data": review(target, target_ts)}
    record.update(changes)
    return record


def write_splits(root, splits):
    """``splits``: split -> list of rows (dicts) or raw lines; returns the DPL-main root."""
    folder = root / "main" / "Books"
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return root / "main"


def load(root, splits, on_error="raise"):
    errors = ErrorLog(on_error)
    data = load_dpl(write_splits(root, splits), None, ["Books"], list(splits), errors)
    return data, errors


def users(data, split):
    return [r.user_id for r in data.split("Books", split)]


def assert_raises_at(root, splits, split, line, kind, field):
    with pytest.raises(InputError) as info:
        load(root, splits)
    error = info.value
    assert (error.path, error.line, error.kind, error.field) == (
        str(root / "main" / "Books" / f"{split}.jsonl"), line, kind, field)
    assert "\n" not in str(error) and f"{split}.jsonl:{line}: {kind}, field {field!r}, value " in str(error)
    return error


# ------------------------------------------------------------------ a user twice in a split
@pytest.mark.parametrize("split", ["val", "test"])
def test_a_user_twice_in_val_or_test_is_an_error_naming_both_rows(tmp_path, split):
    splits = {split: [row("U1"), row("U2"), row("U1", target="B8")]}
    error = assert_raises_at(tmp_path, splits, split, 3, "duplicate user row", "user_id")
    assert f"{split}.jsonl:1" in str(error) and "one row per user" in str(error)
    data, errors = load(tmp_path, splits, on_error="skip")
    assert users(data, split) == ["U1", "U2"] and errors.counts == {"duplicate user row": 1}


def test_train_may_hold_a_user_per_target_but_not_a_repeated_row(tmp_path):
    distinct = [row("U1", target="B8", target_ts=T0 + 8000), row("U1", target="B9")]
    data, errors = load(tmp_path, {"train": distinct})
    assert users(data, "train") == ["U1", "U1"] and not errors.counts
    error = assert_raises_at(tmp_path, {"train": [*distinct, row("U1")]}, "train", 3, "duplicate user row", "user_id")
    assert "same user and target item (data.asin 'B9') as" in str(error) and "train.jsonl:2" in str(error)


# ------------------------------------------------------------------ the profile is the history before the target
ROW_CASES = {
    "target item in its profile": (row("U2", profile=("B1", "B9")), "target in its own profile", "profile[1].asin"),
    "target text in its profile": (row("U2", profile=[review("B1", T0 + 1000, text="my review of B9")]),
                                   "target in its own profile", "profile[0].text"),
    "profile out of time order": (row("U2", profile=[review("B1", T0 + 2000), review("B2", T0 + 1000)]),
                                  "profile out of time order", "profile[1].timestamp"),
    "profile review after target": (row("U2", profile=[review("B1", T0 + 1000), review("B2", T0 + 10_000)]),
                                    "profile review after target", "profile[1].timestamp"),
    "seconds in a millisecond field": (row("U2", profile=[review("B1", 1_600_000_000)]), "value out of range",
                                       "profile[0].timestamp"),
}


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_a_profile_that_is_not_the_history_before_the_target(tmp_path, case):
    bad, kind, field = ROW_CASES[case]
    splits = {"test": [row("U1"), bad, row("U3")]}
    assert_raises_at(tmp_path, splits, "test", 2, kind, field)
    data, errors = load(tmp_path, splits, on_error="skip")
    assert users(data, "test") == ["U1", "U3"] and errors.counts == {kind: 1}


def test_seconds_in_a_millisecond_field_says_so(tmp_path):
    with pytest.raises(InputError, match=r"value 1600000000 \(expected an integer in \[100000000000, .*"
                                         r"a smaller value is likely seconds\)"):
        load(tmp_path, {"test": [row("U1", data=review("B9", 1_600_000_000))]})


def test_equal_times_are_in_order(tmp_path):
    """Same-time reviews (day-resolution sources) are in order, and a profile review may share the target's time."""
    tied = row("U1", profile=[review("B2", T0), review("B1", T0)], target_ts=T0)
    data, errors = load(tmp_path, {"test": [tied]})
    assert [r.item_id for r in data.split("Books", "test")[0].profile] == ["B1", "B2"]  # the documented tie-break


# ------------------------------------------------------------------ a later split's target shown earlier
def test_a_later_targets_review_in_an_earlier_splits_profile_is_an_error(tmp_path):
    splits = {"train": [row("U1", target="B7", profile=("B1", "B8"), target_ts=T0 + 7000), row("U2", target="B7")],
              "val": [row("U1", target="B8", profile=("B1",), target_ts=T0 + 8000), row("U2", target="B8")],
              "test": [row("U1"), row("U2")]}
    error = assert_raises_at(tmp_path, splits, "train", 1, "later split's target in profile", "profile[1].asin")
    assert "the user's val target on" in str(error) and "val.jsonl:1" in str(error)
    data, errors = load(tmp_path, splits, on_error="skip")
    assert users(data, "train") == ["U2"] and users(data, "val") == ["U1", "U2"]
    assert errors.counts == {"later split's target in profile": 1}


# ------------------------------------------------------------------ empty splits
def test_an_empty_split_is_an_error_or_a_counted_skip(tmp_path):
    splits = {"train": [row("U1")], "val": [], "test": [row("U1")]}
    with pytest.raises(InputError,
                       match=r"val.jsonl: empty split, field 'split', value 'val' \(the file holds no rows\)"):
        load(tmp_path, splits)
    data, errors = load(tmp_path, splits, on_error="skip")
    assert users(data, "train") == users(data, "test") == ["U1"] and users(data, "val") == []
    assert errors.counts == {"empty split": 1}
    assert "empty split" in errors.report()


def test_a_split_whose_every_row_is_skipped_is_counted_empty(tmp_path):
    data, errors = load(tmp_path, {"train": [row("U1")], "test": ['{"broken', row("U2", data=None)]}, on_error="skip")
    assert errors.counts == {"malformed JSON": 1, "missing field": 1, "empty split": 1}
    assert "all 2 row(s) skipped as bad input" in errors.examples["empty split"]


def test_nothing_usable_at_all_is_an_error_even_under_skip(tmp_path):
    with pytest.raises(InputError, match=r"main: no usable row, value '1 record\(s\) skipped' "
                                         r"\(every row was bad input: malformed JSON 1; "):
        load(tmp_path, {"test": ['{"broken']}, on_error="skip")
    with pytest.raises(InputError, match=r"main: no usable row, value 'no rows' \(every split read is empty"):
        load(tmp_path, {"test": []}, on_error="skip")


# ------------------------------------------------------------------ our own prepared data passes its own checks
def test_prepared_data_reads_back_whole(tmp_path):
    data = small_data()
    write_dpl(data, tmp_path, "jsonl")
    errors = ErrorLog("raise")
    back = DPLSource(str(tmp_path / "DPL-main"), str(tmp_path / "DPL-meta"), categories=data.categories).load(
        errors, PreprocessReport())
    assert not errors.counts
    for category in data.categories:
        for split in ("train", "val", "test"):
            assert back.split(category, split) == data.split(category, split)


# ------------------------------------------------------------------ through the CLI and the data module
def test_cli_prepare_names_the_duplicate_in_one_line(tmp_path, capsys):
    main = write_splits(tmp_path, {"test": [row("U1"), row("U1", target="B8")]})
    with pytest.raises(SystemExit) as info:
        cli_main(["prepare", "--source", "DPLSource", "--source.main", str(main), "--source.categories", "[Books]",
                  "--source.splits", "[test]"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"dep-lightning: error: {main / 'Books' / 'test.jsonl'}:2: duplicate user row, "
                          f"field 'user_id', value 'U1'")


def test_datamodule_prints_the_report_when_lines_were_passed_over(tmp_path, capsys):
    main = write_splits(tmp_path, {"test": [row("U1"), "  "]})
    dm = small_datamodule(tmp_path / "cache", source=DPLSource(str(main), categories=["Books"], splits=["test"]))
    dm.load_data()
    out = capsys.readouterr().out
    assert "bad input: none" in out and "passed over (not errors): 1 line(s)" in out
    assert "blank or whitespace-only line" in out
