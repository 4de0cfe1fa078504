"""DPL's peer selection: seeded k-means, then the member nearest each centroid."""

import numpy as np
import pytest

from dep_lightning.embeddings.representatives import kmeans, representatives


def three_clusters(seed: int = 0):
    """Rows around three far-apart centres; each cluster holds its exact centre plus pairs
    of rows mirrored around it, so the centroid is the centre row itself."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0]])
    rows, labels, centre_rows = [], [], []
    for c, pairs in zip(range(3), (3, 2, 1)):  # cluster sizes 7, 5, 3
        centre_rows.append(len(rows))
        rows.append(centres[c])
        labels.append(c)
        for _ in range(pairs):
            offset = rng.normal(scale=0.5, size=4)
            rows += [centres[c] + offset, centres[c] - offset]
            labels += [c, c]
    return np.array(rows), np.array(labels), centre_rows


def test_picks_the_member_nearest_each_centroid_largest_cluster_first():
    vectors, _, centres = three_clusters()
    assert representatives(vectors, 3, seed=0) == centres  # clusters of 7, 5, 3 rows


def test_kmeans_recovers_the_clusters_for_any_seed():
    vectors, truth, _ = three_clusters()
    for seed in range(5):
        _, labels = kmeans(vectors, 3, seed=seed)
        # Same partition up to the cluster numbering.
        assert len({(a, b) for a, b in zip(labels, truth)}) == 3


def test_selection_follows_the_rows_not_their_order():
    vectors, _, centres = three_clusters(seed=1)
    order = np.random.default_rng(7).permutation(len(vectors))
    picked = representatives(vectors[order], 3, seed=3)
    assert [int(order[i]) for i in picked] == centres


def test_same_seed_same_picks_and_picks_are_distinct():
    vectors = np.random.default_rng(0).normal(size=(40, 8))
    first = representatives(vectors, 4, seed=11)
    assert first == representatives(vectors, 4, seed=11)
    assert len(set(first)) == 4


def test_few_or_identical_rows():
    vectors = np.ones((5, 3))
    assert representatives(vectors[:2], 3) == [0, 1]  # fewer rows than representatives: all of them
    picked = representatives(vectors, 2, seed=0)  # identical rows still give distinct picks
    assert len(set(picked)) == 2 and all(0 <= i < 5 for i in picked)
    with pytest.raises(ValueError, match="n must be >= 1"):
        representatives(vectors, 0)
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(vectors, 6)
