"""Counterfactual conditions: donors, what a swap moves and what it keeps, slot masking."""

from collections import Counter

import numpy as np
import pytest

from dep_lightning.data.conditions import apply_condition, check_conditions, derangement, donors, mask_slot_vectors
from dep_lightning.data.prompt import DIFF, HIS, PromptConfig
from dep_lightning.data.samples import build_samples
from tests.helpers import small_data, small_datamodule


@pytest.fixture(scope="module")
def samples():
    return build_samples(small_data(), "test")


def test_derangement_has_no_fixed_point_and_is_a_permutation():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 57):
        order = derangement(n, rng)
        assert sorted(order.tolist()) == list(range(n)) and not np.any(order == np.arange(n))
    with pytest.raises(ValueError):
        derangement(1, rng)


def test_donors_are_other_users_of_the_same_category_with_as_many_usable_reviews(samples):
    k = 3
    chosen = donors(samples, k, seed=0)
    matched = 0
    for s, d in zip(samples, chosen):
        donor = samples[d]
        assert donor.user_id != s.user_id and donor.category == s.category
        matched += min(len(donor.history), k) == min(len(s.history), k)
    assert matched == len(samples)  # every group of this data has >= 2 users
    assert chosen == donors(samples, k, seed=0) and chosen != donors(samples, k, seed=1)  # seeded
    # A derangement within each group: every sample lends its history exactly once.
    assert sorted(Counter(chosen).values()) == [1] * len(samples)


def test_swap_moves_the_history_only_and_none_empties_it(samples):
    swapped = apply_condition(samples, "swap", k=3, seed=0)
    chosen = donors(samples, 3, seed=0)
    for s, w, d in zip(samples, swapped, chosen):
        assert (w.sample_id, w.user_id, w.target, w.item, w.category) == (s.sample_id, s.user_id, s.target, s.item,
                                                                          s.category)
        assert w.history == samples[d].history != s.history
    assert all(s.history == () for s in apply_condition(samples, "none", k=3))
    assert apply_condition(samples, "his_only", k=3) == list(samples)


def test_slot_masking_conditions():
    kinds = np.array([HIS, DIFF, HIS, DIFF])
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2) + 1
    peers = np.array([True, True, True, False])
    v, p = mask_slot_vectors("his_only", kinds, vectors, peers)
    assert np.array_equal(v[kinds == DIFF], np.zeros((2, 2))) and np.array_equal(v[kinds == HIS], vectors[kinds == HIS])
    assert p.tolist() == [True, False, True, False]
    v, p = mask_slot_vectors("diff_only", kinds, vectors, peers)
    assert np.array_equal(v[kinds == HIS], np.zeros((2, 2))) and p.tolist() == peers.tolist()
    assert mask_slot_vectors("swap", kinds, vectors, peers)[0] is vectors


def test_condition_names_are_checked_and_yaml_true_is_accepted():
    assert check_conditions([True, "swap"]) == ("true", "swap")
    for bad in ([], ["own"], ["true", "true"]):
        with pytest.raises(ValueError):
            check_conditions(bad)


def test_swapped_examples_keep_token_ids_when_the_slots_are_the_only_user_channel(tmp_path):
    """Without review text and metadata a prompt holds no user-derived token: under swap only
    the slot vectors may change (the no-user control's zero gain rests on this)."""
    dm = small_datamodule(tmp_path, prompt=PromptConfig(with_text=False, metadata=False))
    own, swap = dm.split_examples("score", "true"), dm.split_examples("score", "swap")
    assert len(own) == len(swap) == len(dm.scored_samples())
    changed = 0
    for a, b in zip(own, swap):
        assert a.sample_id == b.sample_id and a.input_ids == b.input_ids and a.labels == b.labels
        changed += not np.array_equal(a.slot_vec, b.slot_vec)
    assert changed == len(own)
    # With metadata the history's item titles and ratings move too.
    dm_meta = small_datamodule(tmp_path, prompt=PromptConfig(with_text=False))
    pairs = zip(dm_meta.split_examples("score", "true"), dm_meta.split_examples("score", "swap"))
    assert any(a.input_ids != b.input_ids for a, b in pairs)


def test_scoring_covers_the_whole_test_split_unless_capped(tmp_path):
    dm = small_datamodule(tmp_path, limit_test=4)
    everything = build_samples(dm.load_data(), "test")
    assert len(dm.scored_samples()) == len(everything) > 4
    capped = small_datamodule(tmp_path, limit_test=4, score_limit=6)
    assert len(capped.scored_samples()) == 6
    assert len({s.category for s in capped.scored_samples()}) == len({s.category for s in everything})
