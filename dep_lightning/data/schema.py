"""The one internal review schema every reader produces.

Raw sources (DPL parquet/JSON lines, Amazon 2023 dumps, 2014/2018 5-core files, the
embedded generator) are all turned into these records; nothing downstream knows which
source a review came from.

Ordering: reviews of one user are ordered by :func:`time_order_key` — timestamp first,
then item id, review title and text. The 2014 5-core data has day-resolution
timestamps and many same-day reviews, so the tie-break must not depend on file order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Categories of the paper's benchmark (DPL-main / DPL-meta configs).
PAPER_CATEGORIES = ("Books", "Movies_and_TV", "CDs_and_Vinyl")
SPLITS = ("train", "val", "test")

#: Title / description given to items that have no metadata (e.g. 5-core without a meta
#: file). The item id keeps prompts distinguishable; the description says plainly that
#: nothing is known, so the model is not fed an invented description.
PLACEHOLDER_TITLE = "Item {item_id}"
PLACEHOLDER_DESCRIPTION = "No description available."

#: Latest review time readers accept (3000-01-01, in ms). Far beyond any real review, it
#: still rejects a millisecond value given where seconds are expected and keeps every
#: timestamp inside the int64 columns of the written parquet files.
MAX_TIMESTAMP_MS = 32_503_680_000_000

#: Earliest review time readers accept (1973-03-03, in ms). Reviews online start in the
#: 1990s; below this bound a millisecond field almost surely holds seconds (every seconds
#: value up to the year 5138 is smaller), which would date a 2014 review to January 1970
#: and scramble the order of a profile mixing both scales.
MIN_TIMESTAMP_MS = 100_000_000_000


@dataclass(frozen=True, slots=True)
class Review:
    """One review: who wrote what about which item, when (milliseconds since epoch)."""

    user_id: str
    item_id: str
    rating: float
    title: str
    text: str
    timestamp: int
    category: str = ""


@dataclass(frozen=True, slots=True)
class Item:
    """Item metadata (DPL-meta row). ``description`` is one string."""

    item_id: str
    title: str
    description: str
    category: str = ""

    @staticmethod
    def placeholder(item_id: str, category: str = "") -> "Item":
        return Item(item_id, PLACEHOLDER_TITLE.format(item_id=item_id), PLACEHOLDER_DESCRIPTION, category)


def time_order_key(review: Review) -> tuple:
    """Deterministic chronological order with a documented tie-break (see module doc)."""
    return (review.timestamp, review.item_id, review.title, review.text)


@dataclass(frozen=True, slots=True)
class DPLRow:
    """A DPL-main row: the target review and the user's earlier reviews (ascending time)."""

    user_id: str
    profile: tuple[Review, ...]
    target: Review
    category: str


@dataclass
class PreparedData:
    """A DPL-format dataset: rows per category and split, plus the item catalogue."""

    rows: dict[str, dict[str, list[DPLRow]]] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return sorted(self.rows)

    def split(self, category: str, split: str) -> list[DPLRow]:
        return self.rows.get(category, {}).get(split, [])

    def item(self, item_id: str, category: str = "") -> Item:
        """Item metadata; items without metadata get the documented placeholder."""
        found = self.items.get(item_id)
        return found if found is not None else Item.placeholder(item_id, category)


@dataclass(frozen=True, slots=True)
class Sample:
    """One DEP example: write ``target`` for ``item`` given the user's ``history``.

    ``history`` is the user's full profile in ascending time; retrieval picks the K
    reviews that enter the prompt. The output rating and title are ``target.rating`` and
    ``target.title``. ``sample_id`` is stable across runs: ``category/split/row``.
    """

    sample_id: str
    split: str
    category: str
    user_id: str
    target: Review
    item: Item
    history: tuple[Review, ...]
