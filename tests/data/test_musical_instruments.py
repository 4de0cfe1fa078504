"""The 5-core reader and preprocessing on real Amazon reviews (../shared/data)."""

from collections import defaultdict

import pytest

from dep_lightning.data.errors import ErrorLog
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.samples import build_samples
from dep_lightning.data.schema import SPLITS, time_order_key
from dep_lightning.data.sources import FiveCoreSource
from tests.conftest import MUSICAL_INSTRUMENTS


@pytest.fixture(scope="module")
def prepared():
    if not MUSICAL_INSTRUMENTS.is_file():
        pytest.skip(f"real review data not found at {MUSICAL_INSTRUMENTS} (../shared/data beside the checkout)")
    path = MUSICAL_INSTRUMENTS
    report = PreprocessReport()
    return FiveCoreSource(str(path)).load(ErrorLog(), report), report


def key(review):
    return (review.user_id, review.item_id, review.timestamp, review.text)


def test_every_input_review_is_accounted_for(prepared):
    data, report = prepared
    assert report.kept["input reviews"] == 10261
    assert data.categories == ["Musical_Instruments"]
    users = {r.user_id for r in data.split("Musical_Instruments", "test")}
    assert report.kept["users"] == len(users) > 500
    # Kept reviews + reviews removed by a review-level rule == input.
    kept = {key(r) for split in SPLITS for row in data.split("Musical_Instruments", split)
            for r in (*row.profile, row.target)}
    review_rules = sum(n for rule, n in report.removed.items() if rule.startswith("reviews:"))
    profile_only = sum(n for rule, n in report.removed.items() if rule.startswith("profile reviews:"))
    assert len(kept) + review_rules + profile_only == 10261


@pytest.mark.parametrize("split", SPLITS)
def test_no_target_in_a_history_of_the_same_split(prepared, split):
    data, _ = prepared
    rows = data.split("Musical_Instruments", split)
    targets = {key(row.target) for row in rows}
    in_histories = {key(r) for row in rows for r in row.profile}
    assert rows and not targets & in_histories
    samples = build_samples(data, split)
    assert not {key(s.target) for s in samples} & {key(r) for s in samples for r in s.history}


def test_targets_in_time_order_per_user(prepared):
    data, _ = prepared
    targets = defaultdict(dict)
    for split in SPLITS:
        for row in data.split("Musical_Instruments", split):
            assert split not in targets[row.user_id], "one row per user and split with one train target"
            targets[row.user_id][split] = row.target
            # Every history review precedes its target (with the documented tie-break).
            assert all(time_order_key(h) < time_order_key(row.target) for h in row.profile)
            assert list(row.profile) == sorted(row.profile, key=time_order_key)
    assert len(targets) > 500
    for user, by_split in targets.items():
        assert set(by_split) == set(SPLITS), user
        train, val, test = (time_order_key(by_split[s]) for s in SPLITS)
        assert train < val < test, user
        assert by_split["train"].timestamp <= by_split["val"].timestamp <= by_split["test"].timestamp


def test_val_and_test_profiles_extend_the_train_profile(prepared):
    data, _ = prepared
    by_user = {split: {r.user_id: r for r in data.split("Musical_Instruments", split)} for split in SPLITS}
    profile_items = {r.item_id for rows in by_user.values() for row in rows.values() for r in row.profile}
    for user, train in by_user["train"].items():
        val, test = by_user["val"][user], by_user["test"][user]
        assert set(train.profile) <= set(val.profile) <= set(test.profile)
        # A target re-enters later profiles unless the profile restriction removed its item.
        assert (train.target in val.profile) == (train.target.item_id in profile_items)
        assert (val.target in test.profile) == (val.target.item_id in profile_items)
