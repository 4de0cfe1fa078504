"""limit_train / limit_val / limit_test: round-robin across categories, in the split's order."""

from __future__ import annotations

from collections import Counter

import pytest

from dep_lightning.data.samples import build_samples
from tests.helpers import InMemorySource, small_data, small_datamodule

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def data():
    return small_data()


def limited(data, tmp_path, split: str, limit: int | None, **overrides) -> list:
    dm = small_datamodule(tmp_path, InMemorySource(data), **{f"limit_{split}": limit}, **overrides)
    return dm._samples(split)


def full(data, split: str, **kwargs) -> list:
    return build_samples(data, split, val_size=512, seed=0, **kwargs)


def by_category(samples) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for s in samples:
        groups.setdefault(s.category, []).append(s.sample_id)
    return groups


@pytest.mark.parametrize("split", SPLITS)
def test_capped_split_sees_every_category_evenly(data, tmp_path, split):
    everything = full(data, split)
    categories = sorted({s.category for s in everything})
    assert len(categories) == 3
    # The split is sorted by category: the first N samples alone would all be one category.
    assert {s.category for s in everything[:7]} == {categories[0]}
    chosen = limited(data, tmp_path, split, 7)
    assert len(chosen) == 7
    counts = Counter(s.category for s in chosen)
    assert set(counts) == set(categories)
    # Round-robin: 7 = 3 + 3 + 1, the extra one from the first category.
    assert [counts[c] for c in categories] == [3, 2, 2]


@pytest.mark.parametrize("split", SPLITS)
def test_round_robin_takes_each_categorys_first_samples_kept_in_split_order(data, tmp_path, split):
    everything = full(data, split)
    groups = by_category(everything)
    chosen = limited(data, tmp_path, split, 5)
    ids = [s.sample_id for s in chosen]
    categories = sorted(groups)
    expected = {groups[categories[0]][0], groups[categories[1]][0], groups[categories[2]][0],
                groups[categories[0]][1], groups[categories[1]][1]}
    assert set(ids) == expected
    # Kept in the split's original order (category-major), not in the order they were picked.
    position = {s.sample_id: i for i, s in enumerate(everything)}
    assert [position[i] for i in ids] == sorted(position[i] for i in ids)


@pytest.mark.parametrize("split", SPLITS)
def test_a_category_that_runs_out_is_skipped(data, tmp_path, split):
    groups = by_category(full(data, split))
    smallest = min(len(v) for v in groups.values())
    if len({len(v) for v in groups.values()}) == 1:
        pytest.skip("all categories have the same size in this split")
    limit = smallest * len(groups) + 2
    counts = Counter(s.category for s in limited(data, tmp_path, split, limit))
    assert sum(counts.values()) == limit
    for category, ids in groups.items():
        # The smallest category is taken whole; the others continue round-robin after it runs out.
        if len(ids) == smallest:
            assert counts[category] == smallest
        else:
            assert counts[category] > smallest


@pytest.mark.parametrize("split", SPLITS)
def test_limit_at_or_above_the_split_size_gives_everything_once(data, tmp_path, split):
    everything = [s.sample_id for s in full(data, split)]
    for limit in (len(everything), len(everything) + 10):
        assert [s.sample_id for s in limited(data, tmp_path, split, limit)] == everything
    assert [s.sample_id for s in limited(data, tmp_path, split, None)] == everything


@pytest.mark.parametrize("split", SPLITS)
def test_deterministic_and_no_duplicates(data, tmp_path, split):
    everything = {s.sample_id for s in full(data, split)}
    for limit in (1, 2, 3, 4, 10, 25, len(everything) - 1):
        first = [s.sample_id for s in limited(data, tmp_path, split, limit)]
        again = [s.sample_id for s in limited(small_data(), tmp_path, split, limit)]
        assert first == again
        assert len(first) == len(set(first)) == limit
        assert set(first) <= everything


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 10, 25])
def test_larger_limits_keep_the_smaller_ones_samples(data, tmp_path, limit):
    smaller = {s.sample_id for s in limited(data, tmp_path, "test", limit)}
    larger = {s.sample_id for s in limited(data, tmp_path, "test", limit + 1)}
    assert smaller < larger


@pytest.mark.parametrize("split", SPLITS)
def test_one_category_keeps_the_first_n(data, tmp_path, split):
    """A single-category dataset (the Musical Instruments study) gets exactly the first N samples."""
    category = data.categories[1]
    everything = [s.sample_id for s in full(data, split, categories=[category])]
    chosen = limited(data, tmp_path, split, 6, categories=[category])
    assert [s.sample_id for s in chosen] == everything[:6]


def test_limit_zero_gives_nothing(data, tmp_path):
    assert limited(data, tmp_path, "test", 0) == []
