"""Data sources: each turns one kind of input into a DPL-format :class:`PreparedData`.

Configs select a source with ``class_path`` / ``init_args``; adding a source format
means adding a reader and a class here. Raw sources run the DPL preprocessing
(``data/preprocess.py``) with thresholds that are part of their configuration.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

from dep_lightning.data.errors import ConfigError, ErrorLog
from dep_lightning.data.preprocess import FIVE_CORE_THRESHOLDS, PreprocessReport, Thresholds, preprocess
from dep_lightning.data.readers.amazon import read_items, read_reviews
from dep_lightning.data.readers.dpl import FORMATS as DPL_FORMATS
from dep_lightning.data.readers.dpl import load_dpl
from dep_lightning.data.schema import PAPER_CATEGORIES, SPLITS, PreparedData


def checked_category(name: str) -> str:
    """A category name, which becomes a folder and file name (``DPL-main/<category>/``,
    ``predictions/test-<category>.jsonl``): one plain path component, nothing else."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "\0" in name
            or any(sep in name for sep in ("/", "\\"))):
        raise ConfigError("category", name, "cannot be used as a file name (no path separators, '.', '..' or NUL)")
    return name


class ReviewSource(ABC):
    """Something that yields a DPL-format dataset."""

    @abstractmethod
    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        """Read (and, for raw sources, preprocess). Bad records go to ``errors``, rule removals to ``report``."""

    def describe(self) -> str:
        return type(self).__name__


class DPLSource(ReviewSource):
    """DPL-main / DPL-meta as published (parquet, HF dataset folders or JSON lines).

    Args:
        main: folder holding one sub-folder per config (``Books/``, ...) of DPL-main.
        meta: the same for DPL-meta; ``None`` gives items the placeholder metadata.
        categories: configs to read.
        splits: splits to read.
        format: which copy of each split to read, for main and meta: ``auto`` (the one
            present; a split stored in two formats or as a file beside shards is an error),
            or ``parquet``, ``jsonl``, ``json`` (both gzipped or not), ``hf`` (save_to_disk folders).
    """

    def __init__(self, main: str, meta: str | None = None, categories: list[str] = list(PAPER_CATEGORIES),
                 splits: list[str] = list(SPLITS),
                 format: Literal["auto", "parquet", "jsonl", "json", "hf"] = "auto"):
        if format not in DPL_FORMATS:  # checked before any data is read
            raise ConfigError("DPLSource.format", format, f"must be one of {', '.join(DPL_FORMATS)}")
        self.main, self.meta, self.splits, self.format = main, meta, list(splits), format
        self.categories = [checked_category(c) for c in categories]

    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        meta = Path(self.meta) if self.meta else None
        return load_dpl(Path(self.main), meta, self.categories, self.splits, errors, format=self.format)

    def describe(self) -> str:
        return f"DPL-main {self.main} (meta {self.meta}), categories {self.categories}"


def _find(root: Path, stem: str) -> Path:
    for suffix in (".jsonl", ".jsonl.gz", ".json", ".json.gz"):
        if (root / (stem + suffix)).is_file():
            return root / (stem + suffix)
    raise FileNotFoundError(f"{root}: no {stem}.jsonl[.gz] (Amazon Reviews 2023 file naming)")


class Amazon2023Source(ReviewSource):
    """Amazon Reviews 2023 raw dumps through the DPL preprocessing.

    Args:
        root: folder holding ``raw_review_<Cat>.jsonl[.gz]`` and ``raw_meta_<Cat>.jsonl[.gz]``.
        categories: categories to read.
        thresholds: preprocessing thresholds (defaults are DPL's).
    """

    def __init__(self, root: str, categories: list[str] = list(PAPER_CATEGORIES),
                 thresholds: Thresholds = Thresholds()):
        self.root, self.categories, self.thresholds = root, [checked_category(c) for c in categories], thresholds

    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        reviews, items = [], {}
        for category in self.categories:
            category_items = read_items(_find(Path(self.root), f"raw_meta_{category}"), "amazon2023", category, errors)
            items.update(category_items)
            reviews.extend(read_reviews(_find(Path(self.root), f"raw_review_{category}"), "amazon2023",
                                        category, errors, items=category_items))
        return preprocess(reviews, items, self.thresholds, report)

    def describe(self) -> str:
        return f"Amazon Reviews 2023 in {self.root}, categories {self.categories}"


class FiveCoreSource(ReviewSource):
    """Amazon 2014/2018 "5-core" reviews through the DPL preprocessing with relaxed thresholds.

    Args:
        reviews: the ``reviews_<Cat>_5.json[.gz]`` file.
        meta: optional 2018-style JSON-lines metadata (asin, title, description). Without
            it, items get the placeholder title/description of ``schema.Item.placeholder``.
        category: category name; by default taken from the file name.
        thresholds: preprocessing thresholds (default: ``FIVE_CORE_THRESHOLDS``).
    """

    def __init__(self, reviews: str, meta: str | None = None, category: str | None = None,
                 thresholds: Thresholds = FIVE_CORE_THRESHOLDS):
        self.reviews, self.meta, self.thresholds = reviews, meta, thresholds
        if category is None:
            match = re.match(r"(?:reviews_)?(.+?)(?:_5)?\.json", Path(reviews).name)
            category = match.group(1) if match else Path(reviews).name.split(".")[0]
        self.category = checked_category(category)

    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        items = read_items(self.meta, "5core", self.category, errors) if self.meta else None
        reviews = list(read_reviews(self.reviews, "5core", self.category, errors, items=items))
        return preprocess(reviews, items, self.thresholds, report)

    def describe(self) -> str:
        return f"5-core reviews {self.reviews} (category {self.category}, meta {self.meta})"


#: Thresholds for the embedded dataset: DPL's rules, sized for a few hundred users.
EMBEDDED_THRESHOLDS = Thresholds(
    min_text_chars=200, min_description_chars=100, max_description_chars=2000, min_item_users=3,
    min_user_reviews=12, max_user_reviews=500, n_train_targets=4, min_item_profile_reviewers=2,
    min_profile_reviews=5)


class EmbeddedSource(ReviewSource):
    """The embedded default dataset (``data/synthetic.py``), generated from a seed.

    Args:
        num_users: number of users to generate.
        num_items: number of items, spread over the three paper categories.
        seed: generator seed; the same seed gives the same dataset.
        thresholds: preprocessing thresholds.
        style_groups: number of style groups sharing a sign-off, vocabulary and rating
            offset (0 = none, the default dataset); see ``SyntheticConfig``.
        user_signal: probability that a review is written in its author's own style
            (1.0, the default) rather than in a randomly drawn review author's (0.0 = none).
        review_sentences: range of the users' typical number of sentences per review.
    """

    def __init__(self, num_users: int = 300, num_items: int = 240, seed: int = 0,
                 thresholds: Thresholds = EMBEDDED_THRESHOLDS, style_groups: int = 0, user_signal: float = 1.0,
                 review_sentences: tuple[int, int] = (3, 12)):
        self.num_users, self.num_items, self.seed, self.thresholds = num_users, num_items, seed, thresholds
        self.style_groups, self.user_signal = style_groups, float(user_signal)
        self.review_sentences = (int(review_sentences[0]), int(review_sentences[1]))

    def config(self):
        """The generator's :class:`~dep_lightning.data.synthetic.SyntheticConfig`."""
        from dep_lightning.data.synthetic import SyntheticConfig

        return SyntheticConfig(num_users=self.num_users, num_items=self.num_items, seed=self.seed,
                               style_groups=self.style_groups, user_signal=self.user_signal,
                               review_sentences=self.review_sentences)

    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        from dep_lightning.data.synthetic import generate

        reviews, items = generate(self.config())
        return preprocess(reviews, items, self.thresholds, report)

    def describe(self) -> str:
        # The knobs are named only when set, so the default dataset's description is unchanged.
        knobs = ""
        if self.style_groups:
            knobs += f", {self.style_groups} style groups"
        if self.user_signal != 1.0:
            knobs += f", user signal {self.user_signal:g}"
        if self.review_sentences != (3, 12):
            knobs += f", {self.review_sentences[0]}-{self.review_sentences[1]} sentences"
        return f"embedded dataset ({self.num_users} users, {self.num_items} items, seed {self.seed}{knobs})"
