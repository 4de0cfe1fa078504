"""History retrieval: which of a user's past reviews enter the prompt for one sample.

Each retriever is a small class so configs can pick one with jsonargparse
``class_path``/``init_args`` (or by name through :func:`make_retriever`). Every retriever
returns indices into ``sample.history`` in ascending (time) order, so the prompt always
lists the retrieved reviews oldest first whatever the ranking criterion was.

Scored retrievers break ties by recency (newer wins): with no usable signal they degrade
to the paper's default, recency retrieval, rather than to an arbitrary order.
"""

from __future__ import annotations

import hashlib
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
from rank_bm25 import BM25Okapi

from dep_lightning.data.schema import Review, Sample

__all__ = [
    "Retriever",
    "RecencyRetriever",
    "BM25Retriever",
    "RandomRetriever",
    "EmbeddingRetriever",
    "RETRIEVERS",
    "make_retriever",
]

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def top_k_by_score(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k highest scores, ties to the newer (higher) index, sorted ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), -i))
    return sorted(order[:k])


class Retriever(ABC):
    """Picks at most k reviews of ``sample.history``."""

    def select(self, sample: Sample, k: int) -> list[int]:
        """Indices into ``sample.history`` of the (at most) k retrieved reviews, ascending.

        ``k <= 0`` gives ``[]``; ``k >= len(history)`` gives every index. Subclasses only
        implement :meth:`_choose` for the non-trivial case ``0 < k < len(history)``.
        """
        n = len(sample.history)
        if k <= 0 or n == 0:
            return []
        if k >= n:
            return list(range(n))
        return sorted(self._choose(sample, k))

    @abstractmethod
    def _choose(self, sample: Sample, k: int) -> list[int]:
        """k distinct indices, ``0 < k < len(sample.history)``; order does not matter."""


class RecencyRetriever(Retriever):
    """The k most recent reviews (the paper's setting)."""

    def _choose(self, sample: Sample, k: int) -> list[int]:
        n = len(sample.history)
        return list(range(n - k, n))


class BM25Retriever(Retriever):
    """Okapi BM25 over the sample's own history, queried with the target item's text."""

    def __init__(self, k1: float = 1.2, b: float = 0.75, epsilon: float = 0.25) -> None:
        self.k1 = k1
        self.b = b
        self.epsilon = epsilon

    def query_text(self, sample: Sample) -> str:
        return f"{sample.item.title} {sample.item.description}"

    def document_text(self, review: Review) -> str:
        return f"{review.title} {review.text}"

    def _choose(self, sample: Sample, k: int) -> list[int]:
        query = tokenize(self.query_text(sample))
        corpus = [tokenize(self.document_text(r)) for r in sample.history]
        # rank_bm25 divides by the average document length and by the vocabulary size,
        # so an all-empty corpus would raise ZeroDivisionError: no text, no signal.
        if not query or not any(corpus):
            return RecencyRetriever()._choose(sample, k)
        scores = BM25Okapi(corpus, k1=self.k1, b=self.b, epsilon=self.epsilon).get_scores(query)
        # Over a tiny corpus Okapi idf goes negative for terms in most documents (with two
        # documents every idf is <= 0), so non-positive scores carry no "this matches"
        # signal and ranking by them would prefer the documents sharing *fewer* words.
        # With no positive score we fall back to recency; this includes all-zero scores.
        if not np.isfinite(scores).all() or scores.max() <= 0:
            return RecencyRetriever()._choose(sample, k)
        return top_k_by_score(scores, k)


class RandomRetriever(Retriever):
    """k reviews drawn without replacement, reproducibly per (seed, sample_id).

    The RNG is seeded from a SHA-256 of the seed and the sample id, not from Python's
    ``hash()`` (salted per process), so a sample's choice does not depend on the order
    samples are visited, on the worker process, or on the run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _rng(self, sample_id: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}\x00{sample_id}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _choose(self, sample: Sample, k: int) -> list[int]:
        return self._rng(sample.sample_id).sample(range(len(sample.history)), k)


Encoder = Callable[[list[str]], np.ndarray]


class EmbeddingRetriever(Retriever):
    """Top-k history reviews by cosine similarity to the target item's text.

    The encoder maps a list of strings to an ``(n, d)`` array; it is usually attached
    later (:meth:`attach`) by the embedding cache, since that is built after the config.
    """

    def __init__(self, encoder: Encoder | None = None) -> None:
        self.encoder = encoder

    def attach(self, encoder: Encoder) -> "EmbeddingRetriever":
        self.encoder = encoder
        return self

    def query_text(self, sample: Sample) -> str:
        return f"{sample.item.title} {sample.item.description}"

    def document_text(self, review: Review) -> str:
        # The review text alone: it is what DEP embeds as e_his, so a caching encoder
        # can serve these lookups from the same cache entries.
        return review.text

    def select(self, sample: Sample, k: int) -> list[int]:
        # Checked before the trivial cases so a missing encoder fails on the first
        # sample, not only on the first one whose history is longer than k.
        if self.encoder is None:
            raise ValueError(
                "EmbeddingRetriever has no encoder: pass encoder=... or call attach(encoder) "
                "(the embedding cache supplies one) before selecting"
            )
        return super().select(sample, k)

    def _choose(self, sample: Sample, k: int) -> list[int]:
        texts = [self.query_text(sample)] + [self.document_text(r) for r in sample.history]
        vectors = np.asarray(self.encoder(texts), dtype=np.float64)  # type: ignore[misc]
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"encoder returned shape {vectors.shape} for {len(texts)} texts; expected ({len(texts)}, d)"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # A zero vector has no direction: cosine 0 instead of NaN, so ties go to recency.
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        scores = unit[1:] @ unit[0]
        return top_k_by_score(np.nan_to_num(scores, nan=0.0), k)


RETRIEVERS: dict[str, type[Retriever]] = {
    "recency": RecencyRetriever,
    "bm25": BM25Retriever,
    "random": RandomRetriever,
    "embedding": EmbeddingRetriever,
}


def make_retriever(name: str, **kwargs) -> Retriever:
    """Build a retriever by its config name (``recency | bm25 | random | embedding``)."""
    try:
        cls = RETRIEVERS[name]
    except KeyError:
        raise ValueError(f"unknown retriever {name!r}; valid names: {', '.join(RETRIEVERS)}") from None
    return cls(**kwargs)
