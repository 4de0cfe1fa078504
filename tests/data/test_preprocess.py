"""The DPL preprocessing rules, one by one, on hand-built reviews."""

import pytest

from dep_lightning.data.preprocess import PreprocessReport, Thresholds, preprocess
from dep_lightning.data.samples import build_samples
from dep_lightning.data.schema import Item, Review

SMALL = Thresholds(min_text_chars=5, min_description_chars=None, max_description_chars=None, min_item_users=2,
                   min_user_reviews=5, max_user_reviews=50, n_train_targets=2, min_item_profile_reviewers=2,
                   min_profile_reviews=1)


def review(user, item, ts, text=None, category="Books"):
    return Review(user, item, 4.0, "title", text or f"{user} on {item} at {ts}", ts, category)


def community(n_users=4, n_items=6, category="Books"):
    """Every user reviews every item, item j at time j."""
    return [review(f"U{u}", f"I{i}", 1000 * i + u, category=category) for u in range(n_users) for i in range(n_items)]


def test_splits_follow_time_order():
    data = preprocess(community(), None, SMALL)
    for split, position in (("train", [2, 3]), ("val", [4]), ("test", [5])):
        rows = [r for r in data.split("Books", split) if r.user_id == "U0"]
        assert [r.target.item_id for r in rows] == [f"I{p}" for p in position]
        for row in rows:
            # I4 is every user's val target, so it has no profile reviewers and is
            # restricted out of the test profiles.
            expected = [f"I{i}" for i in range(min(4, int(row.target.item_id[1:])))]
            assert [h.item_id for h in row.profile] == expected


def test_short_text_rule_counts():
    reviews = community() + [review("U0", "I9", 1, text="abc")]
    report = PreprocessReport()
    preprocess(reviews, None, SMALL, report)
    assert report.removed["reviews: text shorter than 5 chars"] == 1


def test_dedupe_keeps_newest_by_item_and_by_text():
    reviews = community()
    reviews.append(review("U0", "I1", 99999))          # same user and item, newer: replaces the old one
    reviews.append(review("U1", "I7", 5, text="U1 on I2 at 2001"))  # same text as an existing, older one
    report = PreprocessReport()
    data = preprocess(reviews, None, SMALL, report)
    assert report.removed["reviews: same user and item, older one"] == 1
    assert report.removed["reviews: same user and text, older one"] == 1
    u0_test = next(r for r in data.split("Books", "test") if r.user_id == "U0")
    assert u0_test.target.timestamp == 99999


def test_fixed_point_removes_cascading_users_and_items():
    # U9 reviews only items nobody else reviews; once those items go, U9 has too few reviews.
    reviews = community() + [review("U9", f"X{i}", i) for i in range(5)] + [review("U9", "I0", 7)]
    report = PreprocessReport()
    data = preprocess(reviews, None, SMALL, report)
    assert "U9" not in {r.user_id for r in data.split("Books", "test")}
    assert report.removed["reviews: item with < 2 reviewers (fixed point)"] == 5
    assert report.removed["reviews: user outside [5, 50] reviews (fixed point)"] == 1


def test_profile_restriction_ignores_val_and_test_targets():
    # Item Z is reviewed by U0 in history and by U1 only as U1's *test* target: it must not
    # count as having two profile reviewers (that would leak an evaluation target).
    reviews = community()
    reviews.append(review("U0", "Z", 1))
    reviews.append(review("U1", "Z", 10**7))
    report = PreprocessReport()
    data = preprocess(reviews, None, SMALL, report)
    u1_test = next(r for r in data.split("Books", "test") if r.user_id == "U1")
    assert u1_test.target.item_id == "Z"
    assert all(h.item_id != "Z" for split in ("train", "val", "test") for row in data.split("Books", split)
               for h in row.profile)
    assert report.removed["profile reviews: item with < 2 profile reviewers"] == 1


def test_description_rule_with_metadata():
    items = {f"I{i}": Item(f"I{i}", f"t{i}", "d" * (50 if i == 0 else 150)) for i in range(6)}
    report = PreprocessReport()
    data = preprocess(community(), items, Thresholds(**{**SMALL.__dict__, "min_description_chars": 100,
                                                         "max_description_chars": 2000}), report)
    assert report.removed["reviews: item description outside [100, 2000] chars"] == 4
    assert all(h.item_id != "I0" for row in data.split("Books", "test") for h in row.profile)


def test_categories_are_preprocessed_separately():
    data = preprocess(community(category="Books") + community(category="CDs_and_Vinyl"), None, SMALL)
    assert data.categories == ["Books", "CDs_and_Vinyl"]
    assert len(data.split("CDs_and_Vinyl", "test")) == 4


@pytest.mark.parametrize("bad", [dict(min_text_chars=0), dict(n_train_targets=0),
                                 dict(min_user_reviews=3), dict(max_user_reviews=4)])
def test_inconsistent_thresholds_are_rejected(bad):
    with pytest.raises(ValueError):
        Thresholds(**{**SMALL.__dict__, **bad})


def test_dep_samples():
    data = preprocess(community(n_users=6) + community(n_users=6, category="CDs_and_Vinyl"), None, SMALL)
    train = build_samples(data, "train")
    # One train sample per user and category: the row with the longest profile.
    assert len(train) == 12 and all(len(s.history) == 3 for s in train)
    assert len({(s.category, s.user_id) for s in train}) == 12
    val = build_samples(data, "val", val_size=5, seed=3)
    assert len(val) == 5 and val == build_samples(data, "val", val_size=5, seed=3)
    assert {s.sample_id for s in val} != {s.sample_id for s in build_samples(data, "val", val_size=5, seed=4)}
    test = build_samples(data, "test", categories=["Books"])
    assert len(test) == 6 and {s.category for s in test} == {"Books"}
    assert test[0].item.title == "Item I5"  # no metadata: placeholder
    with pytest.raises(ValueError, match="not in the data"):
        build_samples(data, "test", categories=["Toys"])
