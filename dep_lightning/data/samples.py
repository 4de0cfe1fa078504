"""DEP sample construction from DPL-format rows (paper appendix A).

* train: per category, one row per user — the one with the longest profile;
* val:   ``val_size`` seeded random rows of the merged val splits (512 in the paper);
* test:  every test row, per category.
"""

from __future__ import annotations

import numpy as np

from dep_lightning.data.errors import ConfigError
from dep_lightning.data.schema import SPLITS, DPLRow, PreparedData, Sample


def _sample(data: PreparedData, category: str, split: str, index: int, row: DPLRow) -> Sample:
    return Sample(
        sample_id=f"{category}/{split}/{index}",
        split=split,
        category=category,
        user_id=row.user_id,
        target=row.target,
        item=data.item(row.target.item_id, category),
        history=row.profile,
    )


def check_val_size(val_size: int) -> int:
    """``val_size`` as configured; checked when the config is read, not once the data is."""
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise ConfigError("val_size", val_size, "must be an integer >= 0: rows of the merged val splits")
    return val_size


def build_samples(data: PreparedData, split: str, *, val_size: int = 512, seed: int = 0,
                  categories: list[str] | None = None) -> list[Sample]:
    """The DEP samples of ``split`` ("train", "val" or "test"), in a stable order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    categories = data.categories if categories is None else categories
    unknown = sorted(set(categories) - set(data.categories))
    if unknown:
        raise ValueError(f"categories {unknown} not in the data (has {data.categories})")
    indexed = [(c, i, row) for c in categories for i, row in enumerate(data.split(c, split))]
    if split == "train":
        longest: dict[tuple[str, str], tuple[str, int, DPLRow]] = {}
        for c, i, row in indexed:
            key = (c, row.user_id)
            best = longest.get(key)
            # Longest profile wins; on a tie the later target (larger row index) does.
            if best is None or (len(row.profile), i) > (len(best[2].profile), best[1]):
                longest[key] = (c, i, row)
        indexed = sorted(longest.values(), key=lambda entry: (entry[0], entry[1]))
    elif split == "val" and val_size < len(indexed):
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
        chosen = np.sort(np.random.default_rng(seed).choice(len(indexed), size=val_size, replace=False))
        indexed = [indexed[j] for j in chosen]
    return [_sample(data, c, split, i, row) for c, i, row in indexed]
