"""Representative rows of a set of embeddings: seeded k-means, then the row nearest each centroid.

DPL compares a user's review with a few *representative* other reviews of the same item
rather than with all of them. The representatives are found by clustering the peers'
embedding vectors and taking, in each cluster, the member closest to the centroid — a
real review that stands for its group. Plain numpy, deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances, computed without an (n, k, d) intermediate."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; returns ``(centroids (k, d), labels (n,))``.

    A cluster that loses all its members is restarted at the row farthest from its
    centroid, so exactly ``k`` non-empty clusters come back whenever ``x`` has at least
    ``k`` distinct rows.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if x.ndim != 2 or n == 0:
        raise ValueError(f"kmeans needs a non-empty (n, d) array, got shape {x.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} rows, got {k}")
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(n)]
    closest = _squared_distances(x, centroids[:1])[:, 0]
    for c in range(1, k):
        total = closest.sum()
        # Duplicated rows leave nothing to spread over: fall back to a uniform pick.
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centroids[c] = x[pick]
        closest = np.minimum(closest, _squared_distances(x, centroids[c:c + 1])[:, 0])
    labels = np.full(n, -1)
    for _ in range(iterations):
        distances = _squared_distances(x, centroids)
        new = distances.argmin(1)
        for c in range(k):
            if not np.any(new == c):
                far = distances[np.arange(n), new].argmax()
                new[far] = c
                distances[far] = 0.0
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            centroids[c] = x[labels == c].mean(0)
    return centroids, labels


def representatives(vectors: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Indices of up to ``n`` representative rows of ``vectors``, largest cluster first.

    With at most ``n`` rows every row is its own representative (in order). Otherwise the
    rows are clustered into ``n`` groups and each group contributes the member nearest its
    centroid (ties: the lower index); members of different clusters are different rows, so
    the picks are distinct.
    """
    vectors = np.asarray(vectors, np.float64)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(vectors) <= n:
        return list(range(len(vectors)))
    centroids, labels = kmeans(vectors, n, seed=seed)
    distances = _squared_distances(vectors, centroids)
    picks = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        best = members[np.argmin(distances[members, c])]  # argmin keeps the first (lowest index) tie
        picks.append((-len(members), int(best)))
    return [index for _, index in sorted(picks)]
