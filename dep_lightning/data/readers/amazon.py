"""Raw Amazon review dumps: Amazon Reviews 2023 and the 2014/2018 "5-core" files.

Both are JSON lines (optionally gzipped), read one line at a time. Each record is
validated into a :class:`Review`; exact duplicates (same user, item, time and text) are
bad input. Texts are *not* length-filtered here: that is a preprocessing rule, counted
in the preprocessing report.

Amazon Reviews 2023 (``raw_review_<Cat>.jsonl``): rating, title, text, asin,
parent_asin, user_id, timestamp (ms). The item id is ``parent_asin`` (DPL's "asin").
Meta (``raw_meta_<Cat>.jsonl``): parent_asin, title, description (list of paragraphs).

5-core 2014/2018 (``reviews_<Cat>_5.json.gz``): reviewerID, asin, reviewText, summary,
overall, unixReviewTime (seconds). Optional 2018 metadata: asin, title, description.
(The 2014 metadata files are Python literals, not JSON; convert them first.)
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.readers.records import Fields, iter_json_lines, no_records
from dep_lightning.data.schema import Item, Review


def _review_2023(f: Fields, category: str) -> Review:
    return Review(
        user_id=f.string("user_id", allow_empty=False),
        item_id=f.string("parent_asin", allow_empty=False),
        rating=f.number("rating", low=1.0, high=5.0),
        title=f.string("title", default=""),
        text=f.string("text"),
        timestamp=f.timestamp("timestamp", "ms"),
        category=category,
    )


def _review_5core(f: Fields, category: str) -> Review:
    return Review(
        user_id=f.string("reviewerID", allow_empty=False),
        item_id=f.string("asin", allow_empty=False),
        rating=f.number("overall", low=1.0, high=5.0),
        title=f.string("summary", default=""),
        text=f.string("reviewText"),
        timestamp=f.timestamp("unixReviewTime", "s"),
        category=category,
    )


#: Per format: record parser, item-id field, and the optional title field (a review without
#: it keeps an empty title, which is counted in the report rather than passed over silently).
FORMATS = {"amazon2023": (_review_2023, "parent_asin", "title"), "5core": (_review_5core, "asin", "summary")}


def read_reviews(path: str | Path, fmt: str, category: str, errors: ErrorLog,
                 items: dict[str, Item] | None = None) -> Iterator[Review]:
    """Stream validated reviews from a raw dump of format ``amazon2023`` or ``5core``.

    With ``items`` (metadata), a review of an unknown item is an ``InputError``. A file
    yielding no review at all (empty, blank, or every record skipped) is an ``InputError``.
    """
    parse, item_field, title_field = FORMATS[fmt]
    seen: dict[bytes, int] = {}
    skipped_before, n_reviews = Counter(errors.counts), 0
    for line, record in iter_json_lines(path, errors):
        fields = Fields(record, str(path), line)
        try:
            review = parse(fields, category)
            if items is not None and review.item_id not in items:
                raise fields.error(item_field, review.item_id, "item missing from meta")
            key = hashlib.blake2b(repr((review.user_id, review.item_id, review.timestamp, review.text)).encode(),
                                  digest_size=16).digest()
            if key in seen:
                raise fields.error(item_field, review.item_id, "duplicate review",
                                   f"same user, item, time and text as line {seen[key]}")
            seen[key] = line
        except InputError as error:
            errors.handle(error)
            continue
        if record.get(title_field) is None:
            errors.note(f"missing field {title_field!r} (title left empty)", f"{path}:{line}")
        n_reviews += 1
        yield review
    if not n_reviews:
        raise no_records(path, errors.counts - skipped_before, "review")


def _item_2023(f: Fields, category: str) -> Item:
    return Item(f.string("parent_asin", allow_empty=False), f.string("title", default=""),
                f.text_or_list("description", default=""), category)


def _item_5core(f: Fields, category: str) -> Item:
    return Item(f.string("asin", allow_empty=False), f.string("title", default=""),
                f.text_or_list("description", default=""), category)


def read_items(path: str | Path, fmt: str, category: str, errors: ErrorLog) -> dict[str, Item]:
    """Item metadata keyed by item id; a repeated id is bad input (which one is meant?).

    A file yielding no item is an ``InputError``: every review would lack its item.
    """
    parse = _item_2023 if fmt == "amazon2023" else _item_5core
    skipped_before = Counter(errors.counts)
    items: dict[str, Item] = {}
    lines: dict[str, int] = {}
    for line, record in iter_json_lines(path, errors):
        fields = Fields(record, str(path), line)
        try:
            item = parse(fields, category)
            if item.item_id in items:
                raise fields.error("parent_asin" if fmt == "amazon2023" else "asin", item.item_id,
                                   "duplicate item", f"already defined on line {lines[item.item_id]}")
        except InputError as error:
            errors.handle(error)
            continue
        items[item.item_id] = item
        lines[item.item_id] = line
    if not items:
        raise no_records(path, errors.counts - skipped_before, "item")
    return items
