"""What the baselines read beyond the prompt's token ids.

* :class:`SampleContext` (``data.init_args.context: true``): the sample, its retrieved
  reviews with their items' metadata, the prompt settings, and for every retrieved review
  its *peers* — the other users' reviews of the same item in the peer corpus (so never a
  val or test target, see ``data/features.py``) — with their embedding vectors. PAG
  summarises the reviews into a profile; DPL clusters each review's peers and compares.
* user inputs (``prompt.embeddings: user``): the vectors of the user's whole history and
  of the target item (title and description, embedded by the same sentence embedder),
  which PPlug's input-aware attention reads.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from dep_lightning.data.prompt import PromptConfig
from dep_lightning.data.schema import Item, PreparedData, Review, Sample

Lookup = Callable[[Sequence[str]], np.ndarray]


class Peers:
    """Other users' reviews of one item (peer corpus order) and their embedding vectors (n, d)."""

    __slots__ = ("reviews", "vectors")

    def __init__(self, reviews: tuple[Review, ...], vectors: np.ndarray):
        self.reviews, self.vectors = reviews, vectors


class SampleContext:
    """Everything a multi-stage prompting method needs to write its prompts for one sample.

    ``retrieved`` are the K retrieved history reviews, ascending time; ``peers[i]`` belongs
    to ``retrieved[i]``; ``items`` holds the metadata of the target item and of every
    retrieved review's item; ``prompt`` is the DataModule's prompt settings, so a method
    renders its final prompt exactly as the DataModule would, plus what it adds.

    A plain class on purpose: Lightning moves batches to the device by walking through
    containers and dataclasses, and this object (which holds no tensors) must stay opaque.
    """

    __slots__ = ("sample", "retrieved", "peers", "items", "prompt")

    def __init__(self, sample: Sample, retrieved: tuple[Review, ...], peers: tuple[Peers, ...],
                 items: dict[str, Item], prompt: PromptConfig):
        self.sample, self.retrieved, self.peers, self.items, self.prompt = sample, retrieved, peers, items, prompt

    def __repr__(self) -> str:
        return f"SampleContext({self.sample.sample_id!r}, {len(self.retrieved)} retrieved)"

    def item(self, item_id: str, category: str = "") -> Item:
        found = self.items.get(item_id)
        return found if found is not None else Item.placeholder(item_id, category)


class ContextBuilder:
    """Builds :class:`SampleContext` objects from the peer corpus and the embedding cache.

    Args:
        corpus: the peer corpus (``peer_corpus`` of the prepared data).
        data: the prepared data (item metadata).
        lookup: ``texts -> (n, d) float32`` for texts already in the cache (the corpus is).
        prompt: the DataModule's prompt settings.
    """

    def __init__(self, corpus: Sequence[Review], data: PreparedData, lookup: Lookup, prompt: PromptConfig):
        self.data, self.lookup, self.prompt = data, lookup, prompt
        self.by_item: dict[str, list[Review]] = defaultdict(list)
        for review in corpus:
            self.by_item[review.item_id].append(review)

    def peers(self, review: Review) -> Peers:
        others = tuple(r for r in self.by_item.get(review.item_id, ()) if r.user_id != review.user_id)
        vectors = np.asarray(self.lookup([r.text for r in others]), np.float32) if others else np.zeros((0, 0),
                                                                                                        np.float32)
        return Peers(others, vectors)

    def build(self, sample: Sample, retrieved: Sequence[Review]) -> SampleContext:
        items = {sample.item.item_id: sample.item}
        for review in retrieved:
            items.setdefault(review.item_id, self.data.item(review.item_id, review.category))
        return SampleContext(sample, tuple(retrieved), tuple(self.peers(r) for r in retrieved), items, self.prompt)


def item_text(item: Item) -> str:
    """The text whose embedding stands for an item: its title and description."""
    return f"{item.title}\n{item.description}"


def user_texts(samples: Sequence[Sample]) -> list[str]:
    """Texts the user inputs need: every history review of every sample, and every target item."""
    texts = {r.text for s in samples for r in s.history}
    texts.update(item_text(s.item) for s in samples)
    return sorted(texts)


def user_inputs(sample: Sample, lookup: Lookup, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the user's whole history (n, d), ascending time, and of the target item (d,)."""
    history = [r.text for r in sample.history]
    vectors = np.asarray(lookup(history), np.float32) if history else np.zeros((0, dim), np.float32)
    return vectors.reshape(len(history), dim), np.asarray(lookup([item_text(sample.item)])[0], np.float32)
