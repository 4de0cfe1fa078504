"""Property-based tests of every reader against hostile input.

For any file of generated lines — valid records, records with hostile field values
(NaN / infinite / negative / huge / string ratings and times, seconds where milliseconds
belong, arbitrary unicode, the prompt's private-use sentinel, control and bidi
characters, empty and huge texts), duplicates, malformed JSON, undecodable bytes and
deeply nested JSON — each record becomes exactly the review an independent oracle
predicts, or is reported as bad input naming file, line, field and value:

* ``on_error="skip"``: the valid records come out, in order, equal to the oracle's,
  every other non-blank line is counted by kind and every blank line as a note — nothing
  is dropped silently; a raw review or metadata file yielding no record is an error;
* ``on_error="raise"``: the first bad line raises :class:`InputError` with that line's
  number, kind and field; no other exception type ever escapes.

The oracle restates the documented field rules (``data/readers``) independently of
the readers' code.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.readers.amazon import read_items, read_reviews
from dep_lightning.data.readers.dpl import MAIN_SCHEMA, load_dpl
from dep_lightning.data.schema import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, DPLRow, Item, Review, time_order_key
from tests.reliability import strategies as S

CASES = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
WORKDIR = Path(tempfile.mkdtemp(prefix="dep-reader-props-"))  # one file rewritten per example
BLANK = "blank or whitespace-only line"


class Bad(Exception):
    """The oracle's verdict on a bad record: its kind and the field at fault."""

    def __init__(self, kind: str, field: str | None):
        super().__init__(kind, field)
        self.kind, self.field = kind, field


# ------------------------------------------------------------------ the oracle: field rules
def o_string(rec, key, prefix="", *, required=True, allow_empty=True):
    value = rec.get(key)
    if value is None:
        if required:
            raise Bad("missing field", prefix + key)
        return ""
    if not isinstance(value, str):
        raise Bad("wrong type", prefix + key)
    if not allow_empty and not value.strip():
        raise Bad("empty text", prefix + key)
    return value


def o_rating(rec, key, prefix=""):
    value = rec.get(key)
    if value is None:
        raise Bad("missing field", prefix + key)
    if type(value) not in (int, float):
        raise Bad("wrong type", prefix + key)
    if not (1 <= value <= 5):  # NaN fails this comparison too
        raise Bad("value out of range", prefix + key)
    return float(value)


def o_time(rec, key, unit, prefix=""):
    value = rec.get(key)
    if value is None:
        raise Bad("missing field", prefix + key)
    if type(value) is float and math.isfinite(value) and value == int(value):
        value = int(value)
    if type(value) is not int:
        raise Bad("wrong type", prefix + key)
    low, high = (MIN_TIMESTAMP_MS // 1000, MAX_TIMESTAMP_MS // 1000) if unit == "s" else (MIN_TIMESTAMP_MS,
                                                                                           MAX_TIMESTAMP_MS)
    if not low <= value <= high:
        raise Bad("value out of range", prefix + key)
    return value * 1000 if unit == "s" else value


@dataclass(frozen=True)
class RawFormat:
    name: str
    user: str
    item: str
    rating: str
    title: str
    text: str
    time: str
    unit: str

    def review(self, rec: dict, category: str) -> Review:
        return Review(user_id=o_string(rec, self.user, allow_empty=False),
                      item_id=o_string(rec, self.item, allow_empty=False),
                      rating=o_rating(rec, self.rating),
                      title=o_string(rec, self.title, required=False),
                      text=o_string(rec, self.text),
                      timestamp=o_time(rec, self.time, self.unit), category=category)


FIVE_CORE = RawFormat("5core", "reviewerID", "asin", "overall", "summary", "reviewText", "unixReviewTime", "s")
AMAZON_2023 = RawFormat("amazon2023", "user_id", "parent_asin", "rating", "title", "text", "timestamp", "ms")


def expected_raw(lines: list[bytes], fmt: RawFormat, category: str):
    """Per line: ``None`` (blank), a :class:`Review`, or :class:`Bad` — in file order."""
    verdicts, seen = [], set()
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            verdicts.append(Bad("undecodable bytes", None))
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            verdicts.append(None)
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            verdicts.append(Bad("malformed JSON", None))
            continue
        if not isinstance(record, dict):
            verdicts.append(Bad("malformed JSON", None))
            continue
        try:
            review = fmt.review(record, category)
        except Bad as bad:
            verdicts.append(bad)
            continue
        key = (review.user_id, review.item_id, review.timestamp, review.text)
        if key in seen:
            verdicts.append(Bad("duplicate review", fmt.item))
            continue
        seen.add(key)
        verdicts.append(review)
    return verdicts


# ------------------------------------------------------------------ generated files
def raw_record(fmt: RawFormat):
    fields = {fmt.user: S.field_value(st.sampled_from(["U1", "U2", "A3SV2ZZ"]), S.text | S.any_json),
              fmt.item: S.field_value(st.sampled_from(["I1", "B00X"]), S.text | S.any_json),
              fmt.rating: S.field_value(st.sampled_from([1.0, 4.0, 5]), S.rating),
              fmt.title: S.field_value(S.text, S.any_json),
              fmt.text: S.field_value(st.sampled_from(["Works.", "Great tone!"]), S.text | S.any_json),
              fmt.time: S.field_value(st.sampled_from([1393545600, 1393632000]) if fmt.unit == "s"
                                      else st.sampled_from([1600000000000, 1600000000001]), S.timestamp),
              "extra": S.field_value(S.any_json, S.text)}
    return st.fixed_dictionaries(fields).map(S.drop_missing)


def encode(record: dict, ascii_only: bool) -> bytes:
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8")


def raw_lines(fmt: RawFormat):
    record_line = st.builds(encode, raw_record(fmt), st.booleans())

    @st.composite
    def build(draw):
        lines = draw(st.lists(st.one_of(record_line, record_line, record_line, S.junk_line, S.blank_line),
                              min_size=1, max_size=6))
        if draw(st.booleans()) and lines:  # an exact repeat of an earlier line: a duplicate review
            lines.insert(draw(st.integers(1, len(lines))), lines[draw(st.integers(0, len(lines) - 1))])
        if draw(st.integers(0, 9)) == 0:
            lines[0] = b"\xef\xbb\xbf" + lines[0]  # UTF-8 byte-order mark
        return lines

    return build()


def write(lines: list[bytes], name: str) -> Path:
    path = WORKDIR / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def check_nothing_usable(run, on_error, what, bad):
    """A file yielding nothing is a file-level error in either mode: never an empty success."""
    with pytest.raises(InputError) as info:
        run(on_error)
    error = info.value
    assert error.line is None and str(error).startswith(f"{error.path}: ")
    if bad:
        assert error.kind == f"no usable {what}" and f"'{len(bad)} record(s) skipped'" in str(error)
    else:
        assert error.kind == "empty file"


def check_skip_and_raise(verdicts, run, nothing_usable: str | None = None):
    """``run(on_error)`` -> list of outputs; compares both modes with the oracle's verdicts.

    ``nothing_usable``: what the reader yields (``review``, ``item``) when a file yielding
    none of it must be an error; ``None`` for readers where an empty result is allowed.
    """
    want = [v for v in verdicts if v is not None and not isinstance(v, Bad)]
    bad = [(n, v) for n, v in enumerate(verdicts, start=1) if isinstance(v, Bad)]
    if nothing_usable and not want:
        check_nothing_usable(run, "skip", nothing_usable, bad)
        if not bad:
            check_nothing_usable(run, "raise", nothing_usable, bad)
            return
    else:
        got, errors = run("skip")
        assert got == want
        assert errors.counts == Counter(v.kind for _, v in bad)  # every bad line counted, by kind
        assert errors.notes[BLANK] == verdicts.count(None)  # and every blank line, as a note
    if not bad:
        assert run("raise")[0] == want
        return
    with pytest.raises(InputError) as info:
        run("raise")
    line, expected = bad[0]
    error = info.value
    assert (error.line, error.kind, error.field) == (line, expected.kind, expected.field)
    assert str(error).startswith(f"{error.path}:{line}: {expected.kind}")
    if expected.field is not None:
        assert f"field {expected.field!r}" in str(error)
    assert "value " in str(error) and len(str(error)) < 400  # the value is shown, shortened


@pytest.mark.slow  # ~20 s: 1000 generated files
@pytest.mark.parametrize("fmt", [FIVE_CORE, AMAZON_2023], ids=lambda f: f.name)
@CASES
@given(data=st.data())
def test_raw_review_reader(fmt, data):
    lines = data.draw(raw_lines(fmt))
    path = write(lines, f"reviews-{fmt.name}.jsonl")
    verdicts = expected_raw(lines, fmt, "Tools")

    def run(on_error):
        errors = ErrorLog(on_error)
        return list(read_reviews(path, fmt.name, "Tools", errors)), errors

    check_skip_and_raise(verdicts, run, nothing_usable="review")
    for review in (v for v in verdicts if isinstance(v, Review)):
        assert 0 <= review.timestamp <= MAX_TIMESTAMP_MS and 1.0 <= review.rating <= 5.0


# ------------------------------------------------------------------ item metadata
def o_item(rec, key, category):
    item_id = o_string(rec, key, allow_empty=False)
    title = o_string(rec, "title", required=False)
    description = rec.get("description")
    if description is None:
        description = ""
    elif isinstance(description, list) and all(isinstance(p, str) for p in description):
        description = " ".join(p.strip() for p in description if p.strip())
    elif not isinstance(description, str):
        raise Bad("wrong type", "description")
    return Item(item_id, title, description, category)


@pytest.mark.parametrize("fmt,key", [("5core", "asin"), ("amazon2023", "parent_asin")])
@CASES
@given(data=st.data())
def test_item_metadata_reader(fmt, key, data):
    record = st.fixed_dictionaries({
        key: S.field_value(st.sampled_from(["I1", "I2"]), S.text | S.any_json),
        "title": S.field_value(S.text, S.any_json),
        "description": S.field_value(st.one_of(S.text, st.lists(S.text, max_size=3)),
                                     st.one_of(S.any_json, st.lists(S.any_json, min_size=1, max_size=2)))}
    ).map(S.drop_missing)
    lines = data.draw(st.lists(st.one_of(st.builds(encode, record, st.booleans()), S.junk_line, S.blank_line),
                               min_size=1, max_size=6))
    path = write(lines, f"meta-{fmt}.jsonl")
    verdicts, first_line = [], {}
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff" if number == 1 else "")
        except UnicodeDecodeError:
            verdicts.append(Bad("undecodable bytes", None))
            continue
        if not line.strip():
            verdicts.append(None)
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError
        except (ValueError, RecursionError):
            verdicts.append(Bad("malformed JSON", None))
            continue
        try:
            item = o_item(rec, key, "Tools")
            if item.item_id in first_line:
                raise Bad("duplicate item", key)
        except Bad as bad:
            verdicts.append(bad)
            continue
        first_line[item.item_id] = number
        verdicts.append(item)

    def run(on_error):
        errors = ErrorLog(on_error)
        return list(read_items(path, fmt, "Tools", errors).values()), errors

    check_skip_and_raise(verdicts, run, nothing_usable="item")


# ------------------------------------------------------------------ DPL-main rows
def o_dpl_review(rec, prefix, user_id, category):
    return Review(user_id=user_id, item_id=o_string(rec, "asin", prefix, allow_empty=False),
                  rating=o_rating(rec, "rating", prefix), title=o_string(rec, "title", prefix, required=False),
                  text=o_string(rec, "text", prefix, allow_empty=False),
                  timestamp=o_time(rec, "timestamp", "ms", prefix), category=category)


def o_dpl_row(rec, category) -> DPLRow:
    user_id = o_string(rec, "user_id", allow_empty=False)
    profile = rec.get("profile")
    if profile is None:
        raise Bad("missing field", "profile")
    if not isinstance(profile, list):
        raise Bad("wrong type", "profile")
    for i, entry in enumerate(profile):  # the list's shape is checked before any entry's fields
        if not isinstance(entry, dict):
            raise Bad("wrong type", f"profile[{i}]")
    reviews = [o_dpl_review(entry, f"profile[{i}].", user_id, category) for i, entry in enumerate(profile)]
    seen = set()
    for i, review in enumerate(reviews):
        if review.item_id in seen:
            raise Bad("duplicate review", f"profile[{i}].asin")
        seen.add(review.item_id)
    data = rec.get("data")
    if data is None:
        raise Bad("missing field", "data")
    if not isinstance(data, dict):
        raise Bad("wrong type", "data")
    target = o_dpl_review(data, "data.", user_id, category)
    # The profile is the history before the target, in ascending time (first failing entry wins).
    for i, review in enumerate(reviews):
        if i and review.timestamp < reviews[i - 1].timestamp:
            raise Bad("profile out of time order", f"profile[{i}].timestamp")
        if review.item_id == target.item_id:
            raise Bad("target in its own profile", f"profile[{i}].asin")
        if review.text == target.text:
            raise Bad("target in its own profile", f"profile[{i}].text")
        if review.timestamp > target.timestamp:
            raise Bad("profile review after target", f"profile[{i}].timestamp")
    return DPLRow(user_id, tuple(sorted(reviews, key=time_order_key)), target, category)


def dpl_review(typed: bool):
    """A DPL review object; ``typed`` keeps every value within the parquet schema's types."""
    if typed:
        rating = st.one_of(st.sampled_from([1.0, 4.0, 5.0]), st.floats(), st.none())
        stamp = st.one_of(st.sampled_from([1600000000000, 1645076985230]), st.integers(-(2**63), 2**63 - 1),
                          st.none())
        string = st.one_of(S.text, st.none())
        return st.fixed_dictionaries({"rating": rating, "title": string, "text": string,
                                      "asin": st.one_of(st.sampled_from(["B1", "B2", "B3"]), string),
                                      "timestamp": stamp})
    return st.fixed_dictionaries({
        "rating": S.field_value(st.sampled_from([1.0, 4.0, 5.0]), S.rating),
        "title": S.field_value(S.text, S.any_json),
        "text": S.field_value(st.sampled_from(["Loved it.", "Too long."]), S.text | S.any_json),
        "asin": S.field_value(st.sampled_from(["B1", "B2", "B3"]), S.text | S.any_json),
        "timestamp": S.field_value(st.sampled_from([1600000000000, 1645076985230]), S.timestamp),
    }).map(S.drop_missing)


def dpl_row(typed: bool):
    review = dpl_review(typed)
    if typed:
        return st.fixed_dictionaries({"user_id": st.one_of(st.sampled_from(["U1", "U2"]), S.text, st.none()),
                                      "profile": st.one_of(st.lists(review, max_size=4), st.none()),
                                      "data": st.one_of(review, review, st.none())})
    return st.fixed_dictionaries({
        "user_id": S.field_value(st.sampled_from(["U1", "U2"]), S.text | S.any_json),
        "profile": S.field_value(st.lists(review, max_size=4),
                                 st.one_of(S.any_json,
                                           st.lists(st.one_of(review, S.any_json), min_size=1, max_size=3))),
        "data": S.field_value(review, S.any_json),
    }).map(S.drop_missing)


def dpl_verdicts(records):
    """Verdicts on the rows of a train split: a user may have several rows, one per target item."""
    verdicts, seen = [], set()
    for rec in records:
        if isinstance(rec, Bad):  # a line that is no record at all
            verdicts.append(rec)
            continue
        try:
            row = o_dpl_row(rec, "Books")
            if (row.user_id, row.target.item_id) in seen:
                raise Bad("duplicate user row", "user_id")
        except Bad as bad:
            verdicts.append(bad)
            continue
        seen.add((row.user_id, row.target.item_id))
        verdicts.append(row)
    return verdicts


def run_dpl(on_error):
    errors = ErrorLog(on_error)
    return load_dpl(WORKDIR / "dpl", None, ["Books"], ["train"], errors).split("Books", "train"), errors


def dpl_file(suffix: str) -> Path:
    folder = WORKDIR / "dpl" / "Books"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    return folder / f"train{suffix}"


@pytest.mark.slow  # ~20 s: 1000 generated files
@CASES
@given(data=st.data())
def test_dpl_json_lines_reader(data):
    lines = data.draw(st.lists(st.one_of(st.builds(encode, dpl_row(typed=False), st.booleans()),
                                         st.builds(encode, dpl_row(typed=False), st.booleans()), S.junk_line),
                               min_size=1, max_size=5))
    dpl_file(".jsonl").write_bytes(b"\n".join(lines) + b"\n")
    records = []
    for raw in lines:
        try:
            rec = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            records.append(Bad("undecodable bytes", None))
            continue
        except (ValueError, RecursionError):
            records.append(Bad("malformed JSON", None))
            continue
        records.append(rec if isinstance(rec, dict) else Bad("malformed JSON", None))
    check_skip_and_raise(dpl_verdicts(records), run_dpl, nothing_usable="row")


@CASES
@given(records=st.lists(dpl_row(typed=True), min_size=1, max_size=5))
def test_dpl_parquet_reader(records):
    pq.write_table(pa.Table.from_pylist(records, schema=MAIN_SCHEMA), dpl_file(".parquet"))
    check_skip_and_raise(dpl_verdicts(records), run_dpl, nothing_usable="row")


@settings(max_examples=200, deadline=None)
@given(cut=st.floats(0.0, 0.999), junk=st.binary(max_size=64))
def test_damaged_parquet_file_is_reported_not_crashed(cut, junk):
    """A truncated or overwritten parquet file: an InputError naming the file, never an Arrow error."""
    rows = [{"user_id": "U1", "profile": [], "data": {"rating": 4.0, "title": "t", "text": "x", "asin": "B1",
                                                      "timestamp": 1600000000000}}]
    path = dpl_file(".parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=MAIN_SCHEMA), path)
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * cut)] + junk)
    with pytest.raises(InputError) as info:
        run_dpl("skip")
    assert info.value.path == str(path) and "parquet" in info.value.kind
    assert str(info.value).startswith(f"{path}: ")
