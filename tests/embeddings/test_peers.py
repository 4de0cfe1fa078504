"""Tests for dep_lightning.embeddings.peers: vectorised peer differences against brute-force
loops over explicit peers (fast; small random corpora)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dep_lightning.embeddings.peers import (
    build_peer_stats,
    peer_differences,
    user_uniqueness,
    weighted_peer_differences,
)
from tests.tolerances import F32_EPS

D = 16


# --- brute force references: explicit Python loops over peers -------------------------


def brute_diff(corpus_items, corpus_vecs, item, vec, self_row=None):
    """mean_j (e - e_j) over corpus rows j of the same item, j != self_row; None if no peers."""
    diffs = [vec - corpus_vecs[j] for j in range(len(corpus_items)) if corpus_items[j] == item and j != self_row]
    return np.mean(diffs, axis=0) if diffs else None


def brute_weighted(corpus_items, corpus_users, corpus_vecs, item, user, vec, tau, normalize=False):
    """sum_j w_j (e - e_j), w = softmax(-dist_j / tau) over peers of another user; None if none."""
    users = sorted(set(corpus_users))
    mean = {}
    for u in users:
        mean[u] = np.mean([corpus_vecs[j] for j in range(len(corpus_users)) if corpus_users[j] == u], axis=0)
    peers = [j for j in range(len(corpus_items)) if corpus_items[j] == item and corpus_users[j] != user]
    if not peers:
        return None
    dist = np.array([np.linalg.norm(mean[user] - mean[corpus_users[j]]) for j in peers])
    if normalize:
        dist = dist / dist.sum() if dist.sum() > 0 else np.zeros_like(dist)
    logit = -dist / tau
    w = np.exp(logit - logit.max())
    w /= w.sum()
    return sum(w[k] * (vec - corpus_vecs[j]) for k, j in enumerate(peers))


def f32_rounding_tol(*arrays) -> float:
    """Float64 results rounded once to float32, against float64: |diff| <= 2 * max|vector|
    (a difference of two means), so one rounding errs by <= F32_EPS / 2 * 2 max|vector|;
    float64 accumulation adds ~1e-16 relative. Twice that between two such roundings."""
    return F32_EPS * max((float(np.abs(a).max()) for a in arrays if np.size(a)), default=0.0)


def check_against_brute(corpus_items, corpus_vecs, out_items, out_vecs):
    stats = build_peer_stats(corpus_items, corpus_vecs)
    atol = f32_rounding_tol(corpus_vecs, out_vecs)
    query_items = list(corpus_items) + list(out_items)
    query_vecs = np.concatenate([corpus_vecs, out_vecs]) if len(out_items) else corpus_vecs
    in_corpus = np.array([True] * len(corpus_items) + [False] * len(out_items))
    diff, has = peer_differences(stats, query_items, query_vecs, in_corpus)
    assert diff.dtype == np.float32 and diff.shape == query_vecs.shape and has.dtype == bool
    for r in range(len(query_items)):
        expected = brute_diff(corpus_items, corpus_vecs, query_items[r], query_vecs[r], r if in_corpus[r] else None)
        if expected is None:
            assert not has[r] and not diff[r].any(), r
        else:
            assert has[r], r
            np.testing.assert_allclose(diff[r], expected, atol=atol, rtol=0)
    return diff, has


# --- plain mean --------------------------------------------------------------------------


def corpus_1_to_6(seed=0):
    """Items with 1..6 reviewers each, shuffled rows, float64 vectors."""
    rng = np.random.default_rng(seed)
    items = [f"item{k}" for k in range(1, 7) for _ in range(k)]
    items = [items[i] for i in rng.permutation(len(items))]
    return items, rng.standard_normal((len(items), D))


def test_matches_brute_force_in_and_out_of_corpus():
    items, vecs = corpus_1_to_6()
    rng = np.random.default_rng(1)
    out_items = ["item1", "item2", "item6", "item6", "unknown"]
    _, has = check_against_brute(items, vecs, out_items, rng.standard_normal((len(out_items), D)))
    # the single-review item has no peers for its own review, but does for an outsider
    assert has[: len(items)].sum() == len(items) - 1
    assert has[len(items) :].tolist() == [True, True, True, True, False]


def test_diff_is_e_minus_mean_of_others():
    vecs = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 6.0]])
    stats = build_peer_stats(["a", "a", "a"], vecs)
    diff, has = peer_differences(stats, ["a"], vecs[:1])
    np.testing.assert_allclose(diff[0], [1.0 - 4.0, 0.0 - 3.0])  # small integers: exact in float32 too
    diff, _ = peer_differences(stats, ["a"], np.array([[0.0, 0.0]]), in_corpus=False)
    np.testing.assert_allclose(diff[0], [-3.0, -2.0])


def test_no_peers_gives_zero_vector_and_false_mask():
    vecs = np.random.default_rng(2).standard_normal((3, D))
    stats = build_peer_stats(["solo", "pair", "pair"], vecs)
    diff, has = peer_differences(stats, ["solo", "pair"], vecs[:2])
    assert has.tolist() == [False, True]
    assert not diff[0].any()
    # unknown item (not in corpus) and an empty corpus
    diff, has = peer_differences(stats, ["nobody-reviewed-this"], vecs[:1], in_corpus=False)
    assert has.tolist() == [False] and not diff.any()
    for empty in (build_peer_stats([], np.zeros((0, D))), build_peer_stats([], np.zeros((0, 0)))):
        diff, has = peer_differences(empty, ["x", "y"], vecs[:2], in_corpus=False)
        assert not has.any() and not diff.any() and diff.shape == (2, D)


def test_in_corpus_row_of_unknown_item_is_an_error():
    stats = build_peer_stats(["a"], np.zeros((1, D)))
    with pytest.raises(ValueError, match="in_corpus"):
        peer_differences(stats, ["b"], np.zeros((1, D)), in_corpus=True)
    with pytest.raises(ValueError, match="dim"):
        peer_differences(stats, ["a"], np.zeros((1, D + 1)))
    with pytest.raises(ValueError, match="ids but"):
        build_peer_stats(["a", "b"], np.zeros((1, D)))


def test_float32_and_memmap_match_float64(tmp_path):
    items, vecs = corpus_1_to_6(seed=3)
    exact, has = peer_differences(build_peer_stats(items, vecs), items, vecs)
    v32 = vecs.astype(np.float32)
    approx, has32 = peer_differences(build_peer_stats(items, v32), items, v32)
    # Inputs rounded to float32 (e and the peer mean: eps/2 * max|v| each), output rounded
    # once more (eps/2 * 2 max|v|), against an output rounded once: <= 2 * eps * max|v|.
    np.testing.assert_allclose(approx, exact, rtol=0, atol=2 * f32_rounding_tol(vecs))
    assert (has == has32).all()
    mm = np.memmap(tmp_path / "v.f32", dtype=np.float32, mode="w+", shape=v32.shape)
    mm[:] = v32
    mm.flush()
    mapped, _ = peer_differences(build_peer_stats(items, mm), items, mm)
    np.testing.assert_array_equal(mapped, approx)  # the same float32 values through the same code


def test_rows_outside_the_corpus_never_change_statistics():
    """No leakage: evaluation targets stay out of the corpus, and scoring them changes nothing."""
    items, vecs = corpus_1_to_6(seed=4)
    stats = build_peer_stats(items, vecs)
    before = stats.sums.copy(), stats.counts.copy()
    alone, _ = peer_differences(stats, items, vecs)
    targets = np.full((2, D), 1e6)
    mixed, _ = peer_differences(
        stats, items + ["item3", "item4"], np.concatenate([vecs, targets]), np.arange(len(items) + 2) < len(items)
    )
    np.testing.assert_array_equal(mixed[: len(items)], alone)  # row-wise float64 ops: the same bits per row
    np.testing.assert_array_equal(stats.sums, before[0])
    np.testing.assert_array_equal(stats.counts, before[1])


@settings(max_examples=250, deadline=None)
@given(
    corpus_items=st.lists(st.sampled_from("abcde"), max_size=24),
    out_items=st.lists(st.sampled_from("abcdefg"), max_size=6),  # f, g never in the corpus
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_property_matches_brute_force(corpus_items, out_items, seed, scale):
    rng = np.random.default_rng(seed)
    corpus_vecs = rng.standard_normal((len(corpus_items), D)) * scale
    out_vecs = rng.standard_normal((len(out_items), D)) * scale
    check_against_brute(corpus_items, corpus_vecs, out_items, out_vecs)  # tolerance scales with the vectors


# --- weighted variant ------------------------------------------------------------------


def weighted_corpus(seed=5):
    """Each user reviews an item at most once; users' profiles differ in location."""
    rng = np.random.default_rng(seed)
    items, users = [], []
    for u in range(8):
        for i in sorted(rng.choice(6, size=rng.integers(1, 5), replace=False)):
            items.append(f"i{i}")
            users.append(f"u{u}")
    offsets = {f"u{u}": rng.standard_normal(D) * 3 for u in range(8)}
    vecs = np.stack([offsets[u] + rng.standard_normal(D) for u in users])
    return items, users, vecs


def test_weighted_equals_plain_mean_as_tau_grows():
    items, users, vecs = weighted_corpus()
    plain, has = peer_differences(build_peer_stats(items, vecs), items, vecs)
    wide, has_w = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=1e12)
    # Two float64 formulas, each rounded once to float32 (weights 1 - O(1e-11) at tau=1e12).
    tol = 2 * f32_rounding_tol(vecs)
    np.testing.assert_allclose(wide, plain, rtol=0, atol=tol)
    assert (has == has_w).all()
    inf, _ = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=np.inf)
    np.testing.assert_allclose(inf, plain, rtol=0, atol=tol)
    # out-of-corpus rows by a user with no corpus review of that item
    reviewed = set(zip(users, items))
    q_users = ["u0", "u1", "u2"]
    q_items = [next(f"i{i}" for i in range(6) if (u, f"i{i}") not in reviewed) for u in q_users[:2]] + ["i9"]
    q_vecs = np.random.default_rng(6).standard_normal((3, D))
    plain_out, has_out = peer_differences(build_peer_stats(items, vecs), q_items, q_vecs, in_corpus=False)
    wide_out, has_w_out = weighted_peer_differences(items, users, vecs, q_items, q_users, q_vecs, tau=1e12)
    np.testing.assert_allclose(wide_out, plain_out, rtol=0, atol=2 * f32_rounding_tol(vecs, q_vecs))
    assert (has_out == has_w_out).all() and not has_out[2]


def test_weighted_differs_for_small_tau():
    items, users, vecs = weighted_corpus()
    plain, has = peer_differences(build_peer_stats(items, vecs), items, vecs)
    sharp, _ = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=0.1)
    assert np.abs(sharp - plain)[has].max() > 0.1


@pytest.mark.parametrize(("tau", "normalize"), [(0.5, False), (3.0, False), (-1.0, True), (0.2, True)])
@pytest.mark.parametrize("max_pairs", [1, 7, 1 << 16])
def test_weighted_matches_brute_force(tau, normalize, max_pairs):
    items, users, vecs = weighted_corpus(seed=7)
    q_items = items + ["i2", "i3", "nowhere"]
    q_users = users + ["u0", "u5", "u1"]
    q_vecs = np.concatenate([vecs, np.random.default_rng(8).standard_normal((3, D))])
    diff, has = weighted_peer_differences(
        items, users, vecs, q_items, q_users, q_vecs, tau=tau, normalize_distances=normalize, max_pairs=max_pairs
    )
    for r in range(len(q_items)):
        expected = brute_weighted(items, users, vecs, q_items[r], q_users[r], q_vecs[r], tau, normalize)
        if expected is None:
            assert not has[r] and not diff[r].any()
        else:
            assert has[r]
            np.testing.assert_allclose(diff[r], expected, rtol=0, atol=f32_rounding_tol(q_vecs))


def test_weighted_reference_formula():
    """tau=-1 with normalised distances is the reference's softmax(d_j / sum_k d_k)."""
    items, users, vecs = weighted_corpus(seed=9)
    diff, has = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=-1.0, normalize_distances=True)
    mean = {u: vecs[[k for k, v in enumerate(users) if v == u]].mean(axis=0) for u in set(users)}
    for r in np.flatnonzero(has):
        peers = [j for j in range(len(items)) if items[j] == items[r] and users[j] != users[r]]
        norms = np.array([np.linalg.norm(mean[users[r]] - mean[users[j]]) for j in peers])
        w = np.exp(norms / norms.sum())
        w /= w.sum()
        expected = sum(w[k] * (vecs[r] - vecs[j]) for k, j in enumerate(peers))
        np.testing.assert_allclose(diff[r], expected, rtol=0, atol=f32_rounding_tol(vecs))


def test_weighted_explicit_user_means_and_errors():
    items, users, vecs = weighted_corpus(seed=10)
    names = sorted(set(users))
    means = np.stack([vecs[[k for k, v in enumerate(users) if v == u]].mean(axis=0) for u in names])
    a, _ = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=0.7)
    b, _ = weighted_peer_differences(items, users, vecs, items, users, vecs, tau=0.7, user_means=(names, means))
    np.testing.assert_allclose(a, b, rtol=0, atol=2 * f32_rounding_tol(vecs))  # means summed in another order
    with pytest.raises(ValueError, match="query user"):
        weighted_peer_differences(items, users, vecs, ["i0"], ["stranger"], vecs[:1])
    with pytest.raises(ValueError, match="corpus user"):
        weighted_peer_differences(items, users, vecs, items, users, vecs, user_means=(names[:1], means[:1]))
    with pytest.raises(ValueError, match="tau"):
        weighted_peer_differences(items, users, vecs, items, users, vecs, tau=0)


# --- user uniqueness (paper RQ4) ---------------------------------------------------------


def test_uniqueness_hand_computed():
    # user means: a (2, 0) from two rows, b (0, 2), c (-2, 0), d (0, -1);
    # mean of user means (0, 0.25) -- not the mean of rows, which would weight a twice.
    user_ids = ["a", "b", "a", "c", "d"]
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-2.0, 0.0], [0.0, -1.0]])
    u = user_uniqueness(user_ids, vecs)
    assert u.users == ["a", "b", "c", "d"]
    # float64 norms of 2-dim vectors: ~1e-16 relative, well inside assert_allclose's default 1e-7.
    np.testing.assert_allclose(u.score, [np.sqrt(4 + 1 / 16), 1.75, np.sqrt(4 + 1 / 16), 1.25])
    assert u.unique == {"a", "c"} and u.non_unique == {"b", "d"}


def test_uniqueness_ties_break_by_user_id_and_odd_counts():
    u = user_uniqueness(["y", "x"], np.array([[-1.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(u.score, [1.0, 1.0])
    assert u.unique == {"x"}
    u = user_uniqueness(["p", "q", "r"], np.array([[0.0], [1.0], [5.0]]))
    assert u.unique == {"r"} and u.non_unique == {"p", "q"}


@settings(max_examples=50, deadline=None)
@given(n_rows=st.integers(1, 40), n_users=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_uniqueness_halves_partition_users(n_rows, n_users, seed):
    rng = np.random.default_rng(seed)
    user_ids = [f"u{k}" for k in rng.integers(0, n_users, n_rows)]
    u = user_uniqueness(user_ids, rng.standard_normal((n_rows, 4)))
    assert set(u.users) == set(user_ids) and len(u.users) == len(set(user_ids))
    assert u.unique | u.non_unique == set(u.users) and not u.unique & u.non_unique
    assert len(u.unique) == len(u.users) // 2
    score = dict(zip(u.users, u.score))
    if u.unique and u.non_unique:
        assert min(score[x] for x in u.unique) >= max(score[x] for x in u.non_unique)


def test_results_do_not_depend_on_chunking(monkeypatch):
    import dep_lightning.embeddings.peers as peers

    items, vecs = corpus_1_to_6(seed=11)
    out_items = ["item5", "item1", "unknown"]
    out_vecs = np.random.default_rng(12).standard_normal((3, D))
    whole = check_against_brute(items, vecs, out_items, out_vecs)
    monkeypatch.setattr(peers, "_CHUNK_VALUES", 3 * D)  # 3 rows per chunk
    chunked = check_against_brute(items, vecs, out_items, out_vecs)
    np.testing.assert_array_equal(chunked[0], whole[0])  # add.at sums rows in order, however chunked


def test_uniqueness_of_nobody_is_empty():
    u = user_uniqueness([], np.zeros((0, D)))
    assert u.users == [] and u.unique == set() and u.score.shape == (0,)
