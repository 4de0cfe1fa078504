"""Each bad-input case gives an error naming file, line, field and value — or, with
``on_error="skip"``, is skipped and counted. Nothing is dropped silently."""

import gzip
import json

import pytest

from dep_lightning.cli import main
from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.preprocess import FIVE_CORE_THRESHOLDS, PreprocessReport, preprocess
from dep_lightning.data.readers.amazon import read_items, read_reviews
from dep_lightning.data.readers.dpl import load_dpl


def good_5core(user="U1", asin="I1", ts=1393545600, text="Works as described, solid build."):
    return {"reviewerID": user, "asin": asin, "reviewText": text, "summary": "good", "overall": 5.0,
            "unixReviewTime": ts}


def write_lines(path, lines):
    with gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes)
                         else (json.dumps(line) if isinstance(line, dict) else line).encode())
            handle.write(b"\n")
    return path


def read_5core(path, on_error="raise", items=None):
    errors = ErrorLog(on_error)
    return list(read_reviews(path, "5core", "Musical_Instruments", errors, items=items)), errors


CASES = {
    "malformed JSON": ('{"reviewerID": "U2", "asin": ', None, "malformed JSON"),
    "missing field": ({k: v for k, v in good_5core("U2").items() if k != "overall"}, "overall", "missing field"),
    "wrong type": ({**good_5core("U2"), "overall": "five"}, "overall", "wrong type"),
    "wrong type (timestamp)": ({**good_5core("U2"), "unixReviewTime": "2014-02-28"}, "unixReviewTime", "wrong type"),
    "rating out of range": ({**good_5core("U2"), "overall": 7.0}, "overall", "value out of range"),
    "undecodable bytes": (b'{"reviewerID": "U2", "reviewText": "caf\xe9"}', None, "undecodable bytes"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_raw_bad_record_raises_with_location(tmp_path, case, suffix):
    bad, field, kind = CASES[case]
    path = write_lines(tmp_path / f"reviews{suffix}", [good_5core(), bad, good_5core("U3")])
    with pytest.raises(InputError) as info:
        read_5core(path)
    error = info.value
    message = str(error)
    assert (error.path, error.line, error.kind) == (str(path), 2, kind)
    assert f"{path}:2" in message and kind in message and "value" in message
    if field is not None:
        assert error.field == field and repr(field) in message
        assert repr(bad[field] if field in bad else None)[:20] in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_raw_bad_record_skipped_and_counted(tmp_path, case):
    bad, _, kind = CASES[case]
    path = write_lines(tmp_path / "reviews.json", [good_5core(), bad, good_5core("U3")])
    reviews, errors = read_5core(path, on_error="skip")
    assert [r.user_id for r in reviews] == ["U1", "U3"]
    assert errors.counts == {kind: 1}
    assert "1 record(s) skipped" in errors.report() and f"{path}:2" in errors.report()


def test_duplicate_review_names_both_lines(tmp_path):
    path = write_lines(tmp_path / "reviews.json", [good_5core(), good_5core("U3"), good_5core()])
    with pytest.raises(InputError, match=r"reviews.json:3: duplicate review, field 'asin', value 'I1' \(.*line 1\)"):
        read_5core(path)
    reviews, errors = read_5core(path, on_error="skip")
    assert len(reviews) == 2 and errors.counts == {"duplicate review": 1}


def test_review_of_item_missing_from_meta(tmp_path):
    meta = write_lines(tmp_path / "meta.json", [{"asin": "I1", "title": "Pick", "description": ["Nice pick."]}])
    path = write_lines(tmp_path / "reviews.json", [good_5core(), good_5core("U2", asin="I9")])
    items = read_items(meta, "5core", "Musical_Instruments", ErrorLog())
    with pytest.raises(InputError, match=r"reviews.json:2: item missing from meta, field 'asin', value 'I9'"):
        read_5core(path, items=items)
    reviews, errors = read_5core(path, on_error="skip", items=items)
    assert len(reviews) == 1 and errors.counts == {"item missing from meta": 1}


def test_duplicate_item_in_meta(tmp_path):
    meta = write_lines(tmp_path / "meta.json", [{"asin": "I1", "title": "A"}, {"asin": "I1", "title": "B"}])
    with pytest.raises(InputError, match=r"meta.json:2: duplicate item, field 'asin', value 'I1'"):
        read_items(meta, "5core", "Musical_Instruments", ErrorLog())


def test_raw_empty_text_is_counted_by_the_text_rule(tmp_path):
    path = write_lines(tmp_path / "reviews.json", [good_5core(), good_5core("U2", text="   ")])
    reviews, errors = read_5core(path)
    report = PreprocessReport()
    preprocess(reviews, None, FIVE_CORE_THRESHOLDS, report)
    assert report.removed["reviews: text shorter than 1 chars"] == 1


def amazon_2023(user="U1", asin="P1", text="x" * 10):
    return {"rating": 4.0, "title": "ok", "text": text, "asin": asin + "-v", "parent_asin": asin, "user_id": user,
            "timestamp": 1600000000000, "helpful_vote": 0, "verified_purchase": True}


def test_amazon_2023_wrong_type_and_missing_meta(tmp_path):
    path = write_lines(tmp_path / "raw_review_Books.jsonl", [amazon_2023(), {**amazon_2023("U2"), "parent_asin": 42}])
    with pytest.raises(InputError, match=r"raw_review_Books.jsonl:2: wrong type, field 'parent_asin', value 42"):
        list(read_reviews(path, "amazon2023", "Books", ErrorLog()))
    path = write_lines(tmp_path / "raw_review_Books.jsonl", [amazon_2023(), amazon_2023("U2", asin="P7")])
    with pytest.raises(InputError, match=r":2: item missing from meta, field 'parent_asin', value 'P7'"):
        list(read_reviews(path, "amazon2023", "Books", ErrorLog(), items={"P1": None}))


T0 = 1_600_000_000_000  # a plausible time in milliseconds (2020-09-13)


def dpl_row(user="U1", text="A fine book indeed.", profile_asins=("B1",)):
    review = lambda asin, ts: {"rating": 4.0, "title": "t", "text": "history text", "asin": asin, "timestamp": ts}  # noqa: E731
    return {"user_id": user, "profile": [review(a, T0 + 1000 + i) for i, a in enumerate(profile_asins)],
            "data": {"rating": 5.0, "title": "t", "text": text, "asin": "B9", "timestamp": T0 + 9000}}


def load_dpl_lines(tmp_path, lines, on_error="raise", meta=None):
    folder = tmp_path / "main" / "Books"
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "train.jsonl", lines)
    meta_root = None
    if meta is not None:
        (tmp_path / "meta" / "Books").mkdir(parents=True, exist_ok=True)
        write_lines(tmp_path / "meta" / "Books" / "full.jsonl", meta)
        meta_root = tmp_path / "meta"
    errors = ErrorLog(on_error)
    return load_dpl(tmp_path / "main", meta_root, ["Books"], ["train"], errors), errors


DPL_CASES = {
    "empty text": (dpl_row("U2", text=""), "data.text", "empty text"),
    "missing field": ({**dpl_row("U2"), "profile": [{"rating": 4.0, "title": "t", "asin": "B1", "timestamp": T0}]},
                      "profile[0].text", "missing field"),
    "wrong type": ({**dpl_row("U2"), "profile": "B1,B2"}, "profile", "wrong type"),
    "duplicate review": (dpl_row("U2", profile_asins=("B1", "B1")), "profile[1].asin", "duplicate review"),
    "malformed JSON": ('{"user_id": "U2", "profile": [', None, "malformed JSON"),
    "undecodable bytes": (b'{"user_id": "\xff\xfe"}', None, "undecodable bytes"),
}


@pytest.mark.parametrize("case", sorted(DPL_CASES))
def test_dpl_bad_row(tmp_path, case):
    bad, field, kind = DPL_CASES[case]
    with pytest.raises(InputError) as info:
        load_dpl_lines(tmp_path, [dpl_row(), bad])
    assert (info.value.line, info.value.kind, info.value.field) == (2, kind, field)
    assert str(tmp_path / "main" / "Books" / "train.jsonl") + ":2" in str(info.value)
    data, errors = load_dpl_lines(tmp_path, [dpl_row(), bad, dpl_row("U3")], on_error="skip")
    assert [r.user_id for r in data.split("Books", "train")] == ["U1", "U3"]
    assert errors.counts == {kind: 1}


def test_dpl_item_missing_from_meta(tmp_path):
    meta = [{"asin": a, "title": a, "description": "d"} for a in ("B1", "B9")]
    with pytest.raises(InputError,
                       match=r"train.jsonl:2: item missing from meta, field 'profile\[0\].asin', value 'B5'"):
        load_dpl_lines(tmp_path, [dpl_row(), dpl_row("U2", profile_asins=("B5",))], meta=meta)


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    path = write_lines(tmp_path / "reviews_Tools_5.json", [good_5core(), '{"broken'])
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"dep-lightning: error: {path}:2: malformed JSON" in err and "Traceback" not in err


def test_cli_skip_prints_report(tmp_path, capsys):
    lines = [good_5core(u, f"I{i}", 1393545600 + 86400 * i, f"text {u} {i}") for u in "ABCDEF" for i in range(8)]
    path = write_lines(tmp_path / "reviews_Tools_5.json", lines + ['{"broken'])
    main(["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path), "--on_error", "skip"])
    out = capsys.readouterr().out
    assert "bad input: 1 record(s) skipped" in out and "malformed JSON" in out
    assert "| Test Tools | 6 |" in out


# ------------------------------------------------------------------ empty inputs, passed-over lines
BLANK = "blank or whitespace-only line"


def write_empty(path, how):
    """A review file with no record: 0 bytes, gzip of nothing, or blank lines only."""
    payload = b"" if how != "blank lines" else b"\n   \n\t\n"
    if path.suffix == ".gz" and how != "0 bytes":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("how", ["0 bytes", "no lines", "blank lines"])
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_cli_prepare_refuses_an_empty_review_file(tmp_path, capsys, suffix, how):
    path = write_empty(tmp_path / f"reviews_Tools_5{suffix}", how)
    for extra in ([], ["--on_error", "skip"]):
        with pytest.raises(SystemExit) as info:
            main(["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path), *extra])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err
        assert err == f"dep-lightning: error: {path}: empty file, value 'no records' (expected JSON lines of reviews)\n"


def test_cli_prepare_refuses_a_file_whose_every_record_is_skipped(tmp_path, capsys):
    path = write_lines(tmp_path / "reviews_Tools_5.json", ['{"broken', {"reviewerID": "U1"}, "", '{"broken'])
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path), "--on_error", "skip"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"dep-lightning: error: {path}: no usable review, value '3 record(s) skipped' "
                                       "(every record was bad input: malformed JSON 2, missing field 1)\n")


def test_empty_metadata_file_is_an_error(tmp_path):
    meta = write_lines(tmp_path / "meta.json", ["  "])
    with pytest.raises(InputError, match=r"meta.json: empty file, value 'no records' \(expected JSON lines of items\)"):
        read_items(meta, "5core", "Musical_Instruments", ErrorLog("skip"))


def test_blank_lines_and_missing_summary_are_counted(tmp_path):
    no_summary = {k: v for k, v in good_5core("U2").items() if k != "summary"}
    path = write_lines(tmp_path / "reviews.json", [good_5core(), "", no_summary, " \t", good_5core("U3")])
    reviews, errors = read_5core(path)
    assert [r.title for r in reviews] == ["good", "", "good"]
    assert errors.counts == {}  # neither is bad input, so on_error=raise does not stop
    assert errors.notes == {BLANK: 2, "missing field 'summary' (title left empty)": 1}
    report = errors.report()
    assert report.startswith("bad input: none\npassed over (not errors): 3 line(s)")
    assert f"{BLANK}  e.g. {path}:2" in report and f"(title left empty)  e.g. {path}:3" in report


def test_a_skipped_record_is_not_also_counted_as_missing_its_summary(tmp_path):
    bad = {k: v for k, v in good_5core("U2").items() if k not in ("summary", "overall")}
    reviews, errors = read_5core(write_lines(tmp_path / "reviews.json", [good_5core(), bad]), on_error="skip")
    assert len(reviews) == 1 and errors.counts == {"missing field": 1} and not errors.notes


def test_cli_prepare_reports_passed_over_lines(tmp_path, capsys):
    lines = [good_5core(u, f"I{i}", 1393545600 + 86400 * i, f"text {u} {i}") for u in "ABCDEF" for i in range(8)]
    lines[5] = {k: v for k, v in lines[5].items() if k != "summary"}
    path = write_lines(tmp_path / "reviews_Tools_5.json", lines + ["   "])
    main(["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "bad input: none\npassed over (not errors): 2 line(s)" in out and f"{path}:49" in out
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["passed_over_lines"] == {BLANK: 1, "missing field 'summary' (title left empty)": 1}


def test_amazon_2023_missing_title_is_counted(tmp_path):
    path = write_lines(tmp_path / "raw_review_Books.jsonl",
                       [amazon_2023(), {k: v for k, v in amazon_2023("U2").items() if k != "title"}])
    errors = ErrorLog()
    assert [r.title for r in read_reviews(path, "amazon2023", "Books", errors)] == ["ok", ""]
    assert errors.notes == {"missing field 'title' (title left empty)": 1}
