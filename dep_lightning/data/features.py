"""Per-history-review vectors: ``e_his`` from the embedding cache, ``e_diff`` from peers.

The peer corpus is every profile review of every row, minus every val and test target:
no evaluation target can move a peer mean (tested in ``tests/data/test_leakage.py``).
A history review that is itself outside the corpus (a val target shown in a test
profile) is compared with all of its item's corpus reviews.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dep_lightning.data.schema import PreparedData, Review
from dep_lightning.embeddings.peers import PeerStats, build_peer_stats, peer_differences, user_uniqueness


def review_key(review: Review) -> tuple[str, str]:
    """Preprocessing keeps one review per user and item, so this identifies a review."""
    return review.user_id, review.item_id


def peer_corpus(data: PreparedData) -> list[Review]:
    """Distinct profile reviews of all rows, without any val or test target (stable order)."""
    held_out = {review_key(row.target) for c in data.categories for s in ("val", "test") for row in data.split(c, s)}
    corpus: dict[tuple[str, str], Review] = {}
    for category in data.categories:
        for split in ("train", "val", "test"):
            for row in data.split(category, split):
                for review in row.profile:
                    key = review_key(review)
                    if key not in held_out:
                        corpus.setdefault(key, review)
    return list(corpus.values())


@dataclass
class HistoryVectors:
    """Vectors of one sample's retrieved history reviews (rows follow the history order)."""

    his: np.ndarray        # (k, d) float32
    diff: np.ndarray       # (k, d) float32; zero where there are no peers
    has_peers: np.ndarray  # (k,) bool


class FeatureBuilder:
    """Computes :class:`HistoryVectors` from an embedding lookup and the peer corpus.

    Args:
        corpus: the peer corpus (:func:`peer_corpus` of the prepared dataset).
        lookup: ``texts -> (n, d) float32`` (an ``EmbeddingCache.lookup``).
    """

    def __init__(self, corpus: Sequence[Review], lookup):
        self.lookup = lookup
        self.corpus_keys = {review_key(r) for r in corpus}
        vectors = lookup([r.text for r in corpus]) if corpus else np.zeros((0, 0), np.float32)
        self.stats: PeerStats = build_peer_stats([r.item_id for r in corpus], vectors)
        self.uniqueness = user_uniqueness([r.user_id for r in corpus], vectors) if corpus else None

    @staticmethod
    def texts_needed(corpus: Sequence[Review], histories: Sequence[Sequence[Review]]) -> list[str]:
        """Every text whose embedding a run needs: the peer corpus and the retrieved histories."""
        texts = {r.text for r in corpus}
        texts.update(r.text for history in histories for r in history)
        return sorted(texts)

    def vectors(self, histories: Sequence[Sequence[Review]]) -> list[HistoryVectors]:
        flat = [r for history in histories for r in history]
        if not flat:
            return [HistoryVectors(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, bool))
                    for _ in histories]
        his = np.asarray(self.lookup([r.text for r in flat]), dtype=np.float32)
        in_corpus = np.fromiter((review_key(r) in self.corpus_keys for r in flat), dtype=bool, count=len(flat))
        diff, has_peers = peer_differences(self.stats, [r.item_id for r in flat], his, in_corpus)
        out, start = [], 0
        for history in histories:
            end = start + len(history)
            out.append(HistoryVectors(his[start:end], np.asarray(diff[start:end], np.float32), has_peers[start:end]))
            start = end
        return out
