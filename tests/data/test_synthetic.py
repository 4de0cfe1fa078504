"""The embedded synthetic dataset: determinism, schema validity, peers, per-user style."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dep_lightning.data.schema import PAPER_CATEGORIES, Item, Review
from dep_lightning.data.synthetic import SIGNATURES, SyntheticConfig, generate

SMALL = SyntheticConfig(num_users=40, num_items=60, seed=3)
_T2015, _T2024 = 1420070400000, 1704067200000


@pytest.fixture(scope="module")
def default_data():
    return generate(SyntheticConfig())


def by_user(reviews: list[Review]) -> dict[str, list[Review]]:
    out = defaultdict(list)
    for r in reviews:
        out[r.user_id].append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r.timestamp)
    return dict(out)


def check_valid(reviews: list[Review], items: dict[str, Item], config: SyntheticConfig) -> None:
    assert reviews and len(items) == config.num_items
    for item_id, item in items.items():
        assert item.item_id == item_id and re.fullmatch(r"B[A-Z0-9]{9}", item_id)
        assert item.category in config.categories and item.title
        assert 100 <= len(item.description) <= 2000
    per_category = Counter(item.category for item in items.values())
    assert max(per_category.values()) - min(per_category.values()) <= 1   # split evenly
    assert len({r.timestamp for r in reviews}) == len(reviews)            # distinct per review
    users = by_user(reviews)
    assert len(users) == config.num_users
    lo, hi = config.reviews_per_user
    for user_id, rs in users.items():
        assert re.fullmatch(r"A[A-Z0-9]{13}", user_id)
        assert min(lo, config.num_items) <= len(rs) <= min(hi, config.num_items)
        assert len({r.item_id for r in rs}) == len(rs)                       # distinct items
        stamps = [r.timestamp for r in rs]
        assert all(a < b for a, b in zip(stamps, stamps[1:]))              # strictly increasing
    for r in reviews:
        assert type(r.timestamp) is int and _T2015 <= r.timestamp < _T2024
        assert type(r.rating) is float and r.rating in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert len(r.text) >= 200
        assert 2 <= len(r.title.split()) <= 6
        assert r.item_id in items and r.category == items[r.item_id].category


def test_deterministic():
    assert generate(SMALL) == generate(SMALL)
    other_reviews, other_items = generate(SyntheticConfig(num_users=40, num_items=60, seed=4))
    reviews, items = generate(SMALL)
    assert set(other_items) != set(items)
    assert [r.text for r in other_reviews] != [r.text for r in reviews]


def test_default_schema_valid(default_data):
    reviews, items = default_data
    check_valid(reviews, items, SyntheticConfig())
    assert set(items[i].category for i in items) == set(PAPER_CATEGORIES)
    lengths = np.array([len(r.text) for r in reviews])
    assert 250 <= np.median(lengths) <= 1200
    assert set(Counter(r.rating for r in reviews)) == {1.0, 2.0, 3.0, 4.0, 5.0}


@settings(max_examples=20, deadline=None)
@given(num_users=st.integers(1, 12), num_items=st.integers(3, 40), lo=st.integers(1, 8), extra=st.integers(0, 10),
       categories=st.sampled_from([PAPER_CATEGORIES, ("Books",), ("Garden", "Books"), ("A", "B", "C", "D")]),
       seed=st.integers(0, 2**32 - 1))
def test_any_small_config_valid(num_users, num_items, lo, extra, categories, seed):
    config = SyntheticConfig(num_users, max(num_items, len(categories)), (lo, lo + extra), categories, seed)
    check_valid(*generate(config), config)


def test_invalid_config_rejected():
    for bad in (dict(num_users=0), dict(reviews_per_user=(5, 4)), dict(reviews_per_user=(0, 3)),
                dict(categories=()), dict(categories=("Books", "Books")), dict(num_items=2)):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)


def test_reviews_have_peers(default_data):
    reviews, _ = default_data
    reviewers = Counter(r.item_id for r in reviews)
    assert np.mean([reviewers[r.item_id] >= 3 for r in reviews]) >= 0.9
    counts = np.array(sorted(reviewers.values()))
    assert counts.max() >= 2 * np.median(counts)              # popularity skew


def test_users_mostly_review_one_category(default_data):
    # DPL preprocessing works per category: a user needs many reviews in one of them.
    share = [Counter(r.category for r in rs).most_common(1)[0][1] / len(rs) for rs in by_user(default_data[0]).values()]
    assert np.median(share) >= 0.8


def test_signature_phrases_are_personal(default_data):
    users = list(by_user(default_data[0]).values())
    # has[u, s]: how many of user u's reviews contain signature s (case-insensitive).
    has = np.array([[sum(sig.lower() in r.text.lower() for r in rs) for sig in SIGNATURES] for rs in users])
    n = np.array([len(rs) for rs in users])
    top = has.argmax(1)
    own = has[np.arange(len(users)), top] / n
    other = (has[:, top].sum(0) - has[np.arange(len(users)), top]) / (n.sum() - n)
    assert np.mean(own > 0.5) >= 0.9            # a user's main signature is in most of their reviews
    assert np.mean(other) <= 0.1                # ... and in few reviews of anyone else


def test_length_is_a_user_trait(default_data):
    users = by_user(default_data[0])
    lengths = [np.array([len(r.text) for r in rs]) for rs in users.values()]
    between = np.std([x.mean() for x in lengths])
    within = np.mean([x.std() for x in lengths])
    assert between / within > 0.5


def test_rating_habits_differ(default_data):
    means = [np.mean([r.rating for r in rs]) for rs in by_user(default_data[0]).values()]
    assert np.std(means) > 0.3


def test_style_predicts_next_reviews(default_data):
    """Habits seen in a user's early reviews carry over to their later ones."""
    users = list(by_user(default_data[0]).values())

    def rates(rs):
        return (np.mean([r.text.count("!") for r in rs]), np.mean([len(r.text) for r in rs]),
                np.mean([r.rating for r in rs]))

    early, late = np.array([rates(rs[:7]) for rs in users]), np.array([rates(rs[7:]) for rs in users])
    for k in range(3):
        assert np.corrcoef(early[:, k], late[:, k])[0, 1] > 0.5

    # Nearest-profile authorship: the early reviews' word profile identifies the author.
    def tokens(rs):
        return Counter(w for r in rs for w in re.findall(r"[a-z'-]+", r.text.lower()))

    profiles = [tokens(rs[:7]) for rs in users]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*profiles)))}

    def vector(counter):
        v = np.zeros(len(vocab))
        for w, n in counter.items():
            if w in vocab:
                v[vocab[w]] = n
        return v / (np.linalg.norm(v) + 1e-9)

    train = np.stack([vector(p) for p in profiles])
    idf = np.log(len(users) / (1 + (train > 0).sum(0)))
    train = train * idf
    train /= np.linalg.norm(train, axis=1, keepdims=True) + 1e-9
    hits = 0
    for j, rs in enumerate(users):
        v = vector(tokens(rs[7:])) * idf
        hits += int(np.argmax(train @ v) == j)
    assert hits / len(users) > 0.5          # chance is 1 / 300
