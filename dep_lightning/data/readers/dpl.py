"""DPL-main / DPL-meta as published: parquet, an HF ``datasets`` folder, or JSON lines.

Layout looked for under a root folder, per config (category) and split::

    <root>/<config>/<split>.parquet | <split>-*.parquet  (HF hub shards: train-00000-of-00001.parquet)
    <root>/<config>/<split>.jsonl[.gz] | .json[.gz], or <split>-*.jsonl[.gz] | .json[.gz] shards
    <root>/<config>/  holding dataset_dict.json  (DatasetDict.save_to_disk)
    <root>/<config>/<split>/ holding state.json  (Dataset.save_to_disk)

Each split must be there once: two formats, or a plain file beside shards, is an error
naming the files; the source's ``format:`` option (parquet, jsonl, json, hf) picks one.

DPL-main rows: ``user_id``, ``profile`` (list of reviews, ascending time), ``data`` (the
target review); a review is ``{rating, title, text, asin, timestamp (ms)}``.
DPL-meta rows (split ``full``): ``asin``, ``title``, ``description``.
"""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dep_lightning.atomic import atomic_open, atomic_path
from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.readers.records import Fields, iter_json_lines, no_records
from dep_lightning.data.schema import SPLITS, DPLRow, Item, PreparedData, Review, time_order_key

REVIEW_FIELDS = ("rating", "title", "text", "asin", "timestamp")
_REVIEW_TYPE = pa.struct([("rating", pa.float64()), ("title", pa.string()), ("text", pa.string()),
                          ("asin", pa.string()), ("timestamp", pa.int64())])
MAIN_SCHEMA = pa.schema([("user_id", pa.string()), ("profile", pa.list_(_REVIEW_TYPE)), ("data", _REVIEW_TYPE)])
META_SCHEMA = pa.schema([("asin", pa.string()), ("title", pa.string()), ("description", pa.string())])
_BATCH_ROWS = 1024


#: Values of the DPL source's ``format:`` option. ``auto`` takes the one copy of a split that
#: is present; the others pick that format when a folder holds a split in several.
FORMATS = ("auto", "parquet", "jsonl", "json", "hf")
_SUFFIXES = {"parquet": (".parquet",), "jsonl": (".jsonl", ".jsonl.gz"), "json": (".json", ".json.gz")}
_HF_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")  # train-00000-of-00003.parquet


def split_files(root: Path, config: str, split: str, format: str = "auto") -> list[Path]:
    """The files (or the HF folder) holding one config's split, in a stable order.

    Exactly one copy of a split is read: a split found in several formats or layouts (a
    plain file beside shards, ``.jsonl`` beside ``.jsonl.gz``) would otherwise be read
    twice and its rows doubled, so it is an :class:`InputError` listing the copies.
    """
    if format not in FORMATS:
        raise ValueError(f"DPL format must be one of {FORMATS}, got {format!r}")
    folder = Path(root) / config
    copies = _split_copies(folder, split)
    if format != "auto":
        copies = {key: paths for key, paths in copies.items() if key[0] == format}
    if not copies:
        return []
    if len(copies) > 1 or any(layout == "file" and len(paths) > 1 for (_, layout), paths in copies.items()):
        raise _ambiguous_split(folder, split, copies)
    [((_, layout), paths)] = copies.items()
    if layout == "shards":
        _check_shards(folder, split, paths)
    return sorted(paths)


def _split_copies(folder: Path, split: str) -> dict[tuple[str, str], list[Path]]:
    """Every copy of ``split`` in ``folder``, keyed by ``(format, layout)``; layout is
    ``folder`` (HF ``save_to_disk``), ``file`` (``<split>.<ext>``) or ``shards`` (``<split>-*.<ext>``)."""
    copies: dict[tuple[str, str], list[Path]] = {}
    in_dataset_dict = (folder / "dataset_dict.json").is_file() and (folder / split).is_dir()
    if in_dataset_dict or (folder / split / "state.json").is_file():
        copies[("hf", "folder")] = [folder / split]
    for fmt, suffixes in _SUFFIXES.items():
        for suffix in suffixes:
            if (folder / (split + suffix)).is_file():
                copies.setdefault((fmt, "file"), []).append(folder / (split + suffix))
            shards = [p for p in folder.glob(f"{glob.escape(split)}-*{suffix}") if p.is_file()]
            if shards:
                copies.setdefault((fmt, "shards"), []).extend(shards)
    return copies


def _ambiguous_split(folder: Path, split: str, copies: dict[tuple[str, str], list[Path]]) -> InputError:
    """Which copies there are, and how to choose: ``format:`` tells formats apart, not copies of one."""
    listing = "; ".join(f"{fmt} {layout}: {', '.join(sorted(p.name for p in paths))}"
                        for (fmt, layout), paths in sorted(copies.items()))
    formats = sorted({fmt for fmt, _ in copies})
    if len(formats) > 1:
        how = (f"choose one with the DPL source's format option ({' | '.join(formats)}; e.g. --source.format "
               f"{formats[0]} or init_args format: {formats[0]})")
        if len(formats) < sum(len(paths) if layout == "file" else 1 for (_, layout), paths in copies.items()):
            how += " and keep one copy of that format (move the others away)"
    else:
        how = f"format: {formats[0]} cannot choose between these; keep one copy (move the others away)"
    return InputError(str(folder), None, "split", split, "split stored more than once",
                      f"{listing}; reading all would repeat its rows; {how}")


def _check_shards(folder: Path, split: str, shards: list[Path]) -> None:
    """HF-named shards (``-NNNNN-of-NNNNN``) must be one complete set: a missing or
    foreign shard would silently lose or add rows."""
    numbers = [_HF_SHARD.search(p.name.removesuffix(".gz").rsplit(".", 1)[0]) for p in shards]
    if not any(numbers):
        return  # shards named some other way: every file is a part, read once each
    names = sorted(p.name for p in shards)
    totals = {m.group(2) for m in numbers if m}
    indices = sorted(int(m.group(1)) for m in numbers if m)
    if not all(numbers) or len(totals) > 1 or indices != list(range(int(next(iter(totals))))):
        raise InputError(str(folder), None, "split", split, "incomplete shards",
                         f"found {', '.join(names)}; expected {split}-00000-of-N ... {split}-(N-1)-of-N, each once")


def iter_records(path: Path, errors: ErrorLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row_number, record)`` from a parquet file, an HF dataset folder or JSON lines.

    Parquet and Arrow are read in batches (memory-mapped for HF folders), never whole.
    """
    if path.is_dir():
        import datasets  # imported lazily: slow to import, only needed for this layout

        dataset = datasets.load_from_disk(str(path))
        for start in range(0, len(dataset), _BATCH_ROWS):
            batch = dataset[start : start + _BATCH_ROWS]
            keys = list(batch)
            for offset in range(len(batch[keys[0]]) if keys else 0):
                yield start + offset + 1, {key: batch[key][offset] for key in keys}
    elif path.suffix == ".parquet":
        row = 0
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
            for batch in batches:
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
        except (pa.ArrowException, OSError) as exc:
            # A truncated or overwritten file: no record can be located, so the file is reported.
            raise InputError(str(path), None, None, f"after row {row}", "unreadable parquet file",
                             str(exc)) from exc
    else:
        yield from iter_json_lines(path, errors)


def parse_review(fields: Fields, user_id: str, category: str) -> Review:
    return Review(
        user_id=user_id,
        item_id=fields.string("asin", allow_empty=False),
        rating=fields.number("rating", low=1.0, high=5.0),
        title=fields.string("title", default=""),
        text=fields.string("text", allow_empty=False),
        timestamp=fields.timestamp("timestamp", "ms"),
        category=category,
    )


def parse_main_row(fields: Fields, category: str) -> DPLRow:
    user_id = fields.string("user_id", allow_empty=False)
    profile = [parse_review(entry, user_id, category) for entry in fields.records("profile")]
    # DPL keeps one review per user and item, so a repeated item is a duplicated review.
    seen: dict[str, int] = {}
    for index, review in enumerate(profile):
        if review.item_id in seen:
            raise fields.error(f"profile[{index}].asin", review.item_id, "duplicate review",
                               f"same item as profile[{seen[review.item_id]}]")
        seen[review.item_id] = index
    target = parse_review(fields.nested("data"), user_id, category)
    check_profile(fields, profile, target)
    # Ties in time are broken by the documented key (schema.time_order_key).
    return DPLRow(user_id, tuple(sorted(profile, key=time_order_key)), target, category)


def check_profile(fields: Fields, profile: list[Review], target: Review) -> None:
    """A profile is the user's history *before* the target, in ascending time.

    Checked per profile entry, first failure wins: its time is not earlier than the entry
    before it (``profile out of time order``: a sorted copy would hide a mangled file); it
    is the target itself, by item or by text (``target in its own profile``: the prompt
    would show the reference); it is dated after the target (``profile review after
    target``: the prompt would show the future).
    """
    for index, review in enumerate(profile):
        where = f"profile[{index}]"
        if index and review.timestamp < profile[index - 1].timestamp:
            raise fields.error(f"{where}.timestamp", review.timestamp, "profile out of time order",
                               f"earlier than profile[{index - 1}] at {profile[index - 1].timestamp}; "
                               "DPL profiles are in ascending time")
        if review.item_id == target.item_id:
            raise fields.error(f"{where}.asin", review.item_id, "target in its own profile",
                               "the target's item; the prompt would show the reference")
        if review.text == target.text:
            raise fields.error(f"{where}.text", review.text, "target in its own profile",
                               "the target's text; the prompt would show the reference")
        if review.timestamp > target.timestamp:
            raise fields.error(f"{where}.timestamp", review.timestamp, "profile review after target",
                               f"target at {target.timestamp}; the prompt would show a later review")


def parse_meta_row(fields: Fields, category: str) -> Item:
    return Item(
        item_id=fields.string("asin", allow_empty=False),
        title=fields.string("title", default=""),
        description=fields.text_or_list("description", default=""),
        category=category,
    )


def read_main(path: Path, category: str, errors: ErrorLog) -> Iterator[tuple[int, DPLRow]]:
    for line, record in iter_records(path, errors):
        try:
            yield line, parse_main_row(Fields(record, str(path), line), category)
        except InputError as error:
            errors.handle(error)


def read_meta(path: Path, category: str, errors: ErrorLog) -> Iterator[Item]:
    for line, record in iter_records(path, errors):
        try:
            yield parse_meta_row(Fields(record, str(path), line), category)
        except InputError as error:
            errors.handle(error)


#: Splits with one row per user (DPL's val and test targets are each user's last two
#: reviews). Other splits (train) may hold several rows of a user, one per target item.
ONE_ROW_PER_USER = ("val", "test")

Located = list[tuple[Path, int, DPLRow]]  # (file, row number, row) of one split, in file order


def load_dpl(main_root: Path, meta_root: Path | None, categories: list[str], splits: list[str],
             errors: ErrorLog, format: str = "auto") -> PreparedData:
    """Read DPL-main (and DPL-meta when given) into :class:`PreparedData`.

    With metadata, every review's item must be in it: a missing item is an
    ``InputError`` (or a skipped row under ``on_error="skip"``). ``format`` (one of
    :data:`FORMATS`) picks the copy of each split, for main and meta alike.

    Integrity, checked as the splits are read (``on_error`` decides: raise, or skip the row
    and count it): rows whose profile is not the history before the target
    (:func:`check_profile`); a user twice in a split (:func:`read_split`); a val / test
    target in the profile of the same user's earlier-split row (:func:`drop_later_targets`);
    an empty split (counted under ``skip``). Nothing read at all is always an error.
    """
    data = PreparedData()
    counts_before = Counter(errors.counts)
    for category in categories:
        if meta_root is not None:
            data.items.update(_read_meta_split(Path(meta_root), category, format, errors))
        located: dict[str, Located] = {}
        for split in splits:
            files = split_files(Path(main_root), category, split, format)
            if not files:
                raise FileNotFoundError(f"{main_root}: no DPL-main files for config {category!r} split {split!r}"
                                        + _format_note(format))
            skipped_before = errors.skipped
            located[split] = read_split(files, split, category, data.items if meta_root is not None else None, errors)
            if not located[split]:
                errors.handle(_empty_split(files, split, errors.skipped - skipped_before))
        drop_later_targets(located, errors)
        data.rows[category] = {split: [row for _, _, row in entries] for split, entries in located.items()}
    if not any(rows for by_split in data.rows.values() for rows in by_split.values()):
        raise _nothing_read(main_root, errors.counts - counts_before, categories, splits)
    return data


def _nothing_read(main_root: Path, skipped: Counter, categories: list[str], splits: list[str]) -> InputError:
    """Every split read is empty: an error whatever ``on_error`` says (never an empty success)."""
    skipped.pop("empty split", None)
    where = f"categories {list(categories)}, splits {list(splits)}"
    if skipped:
        kinds = ", ".join(f"{kind} {n}" for kind, n in skipped.most_common())
        return InputError(str(main_root), None, None, f"{skipped.total()} record(s) skipped", "no usable row",
                          f"every row was bad input: {kinds}; {where}")
    return InputError(str(main_root), None, None, "no rows", "no usable row", f"every split read is empty; {where}")


def _read_meta_split(meta_root: Path, category: str, format: str, errors: ErrorLog) -> dict[str, Item]:
    meta_files = split_files(meta_root, category, "full", format)
    if not meta_files:
        raise FileNotFoundError(f"{meta_root}: no DPL-meta files for config {category!r} split 'full'"
                                + _format_note(format))
    skipped_before = Counter(errors.counts)
    items = {item.item_id: item for path in meta_files for item in read_meta(path, category, errors)}
    if not items:  # every review would lack its item
        raise no_records(meta_files[0] if len(meta_files) == 1 else meta_root / category,
                         errors.counts - skipped_before, "item")
    return items


def _empty_split(files: list[Path], split: str, skipped: int) -> InputError:
    where = files[0] if len(files) == 1 else files[0].parent
    detail = f"all {skipped} row(s) skipped as bad input" if skipped else "the file holds no rows"
    return InputError(str(where), None, "split", split, "empty split", detail)


def _format_note(format: str) -> str:
    return "" if format == "auto" else f" in format {format!r}"


def read_split(files: list[Path], split: str, category: str, items: dict[str, Item] | None,
               errors: ErrorLog) -> Located:
    """The rows of one split with where each was read; bad rows go to ``errors``.

    A user appears once in a split of :data:`ONE_ROW_PER_USER`, and at most once per
    target item elsewhere: a repeated row would count a sample twice (val / test) or
    weight a user twice in training; which copy is meant cannot be told, so it is bad input.
    """
    entries: Located = []
    first: dict[object, tuple[Path, int]] = {}
    for path in files:
        for line, row in read_main(path, category, errors):
            key = row.user_id if split in ONE_ROW_PER_USER else (row.user_id, row.target.item_id)
            try:
                if items is not None:
                    _check_items_known(row, items, path, line)
                if key in first:
                    raise _duplicate_user(row, split, path, line, *first[key])
            except InputError as error:
                errors.handle(error)
                continue
            first[key] = (path, line)
            entries.append((path, line, row))
    return entries


def _duplicate_user(row: DPLRow, split: str, path: Path, line: int, first_path: Path, first_line: int) -> InputError:
    if split in ONE_ROW_PER_USER:
        detail = f"the user's {split} row is also on {first_path}:{first_line}; {split} holds one row per user"
    else:
        detail = f"same user and target item (data.asin {row.target.item_id!r}) as {first_path}:{first_line}"
    return InputError(str(path), line, "user_id", row.user_id, "duplicate user row", detail)


def drop_later_targets(located: dict[str, Located], errors: ErrorLog) -> None:
    """A user's val / test target must not be in the profile of their row in an earlier split.

    Splits are ordered train < val < test (DPL's targets are each user's reviews in time
    order). A train row showing the val or test reference would train on it; a val row
    showing the test reference would choose the checkpoint on it. Such rows are bad input
    and, under ``skip``, removed from their split.
    """
    later: dict[tuple[str, str], tuple[str, Path, int]] = {}  # (user, item) -> (split, file, line) of a target
    for split in [name for name in reversed(SPLITS) if name in located]:
        kept: Located = []
        for path, line, row in located[split]:
            try:
                for index, review in enumerate(row.profile):
                    found = later.get((row.user_id, review.item_id))
                    if found is not None:
                        raise InputError(str(path), line, f"profile[{index}].asin", review.item_id,
                                         "later split's target in profile",
                                         f"the user's {found[0]} target on {found[1]}:{found[2]}; "
                                         f"this {split} row would show its reference")
            except InputError as error:
                errors.handle(error)
                continue
            kept.append((path, line, row))
        located[split] = kept
        for path, line, row in kept:
            later.setdefault((row.user_id, row.target.item_id), (split, path, line))


def _check_items_known(row: DPLRow, items: dict[str, Item], path: Path, line: int) -> None:
    checks = [("data.asin", row.target.item_id)] + [(f"profile[{i}].asin", r.item_id)
                                                     for i, r in enumerate(row.profile)]
    for field, item_id in checks:
        if item_id not in items:
            raise InputError(str(path), line, field, item_id, "item missing from meta")


def _review_dict(review: Review) -> dict[str, Any]:
    return {"rating": review.rating, "title": review.title, "text": review.text,
            "asin": review.item_id, "timestamp": review.timestamp}


def main_records(rows: list[DPLRow]) -> list[dict[str, Any]]:
    return [{"user_id": r.user_id, "profile": [_review_dict(p) for p in r.profile], "data": _review_dict(r.target)}
            for r in rows]


def write_dpl(data: PreparedData, out: Path, fmt: str = "parquet") -> list[Path]:
    """Write ``data`` in the published layout: ``out/DPL-main/<cat>/<split>.<ext>``, ``out/DPL-meta/<cat>/full.<ext>``.

    Files are written to a temporary name, fsynced and renamed (:mod:`dep_lightning.atomic`),
    so a crash never leaves a half-written split that a later read would take as complete.
    """
    import json

    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"format must be 'parquet' or 'jsonl', got {fmt!r}")
    written = []

    def emit(records: list[dict[str, Any]], schema: pa.Schema, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            with atomic_path(target) as tmp:
                pq.write_table(pa.Table.from_pylist(records, schema=schema), tmp)
        else:
            with atomic_open(target, "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        written.append(target)

    for category in data.categories:
        for split, rows in sorted(data.rows[category].items()):
            emit(main_records(rows), MAIN_SCHEMA, Path(out) / "DPL-main" / category / f"{split}.{fmt}")
        used = sorted({r.item_id for rows in data.rows[category].values() for row in rows
                       for r in (*row.profile, row.target)})
        meta = [{"asin": i, "title": data.item(i, category).title, "description": data.item(i, category).description}
                for i in used]
        emit(meta, META_SCHEMA, Path(out) / "DPL-meta" / category / f"full.{fmt}")
    return written
