"""Counterfactual conditions: whose history a sample is scored (or generated) with.

The personalization gain of a run is how much worse the reference review becomes when
the model is given someone else's history: ``NLL(swap) - NLL(true)`` per sample. The
conditions change only the user side of a sample, identically for every method:

* ``true``: the user's own history (the ordinary sample);
* ``swap``: another user's history. Everything derived from the history moves together
  — the retrieved reviews (so their text, their items' metadata, their his / diff slot
  vectors, RAG's retrieved texts, PPlug's whole-history vectors) — while the target item,
  its peers, the output rating and title (the instruction) stay. Donors come from a
  seeded derangement within the same category and, where possible, among users with the
  same number of usable history reviews (``min(len(history), k)``), so a swap changes
  what the slots hold, not how many there are;
* ``none``: no history at all (the method's own "empty history" form);
* ``his_only`` / ``diff_only`` (DEP): the user's own history with the diff slots given
  the "no peers" input (the zero vector, marked without peers) or the his slots given
  the zero vector — which of the two channels carries the signal.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Sequence

import numpy as np

from dep_lightning.data.schema import Sample

CONDITIONS = ("true", "swap", "none", "his_only", "diff_only")
#: Conditions that change which reviews a sample holds (the rest change slot vectors only).
HISTORY_CONDITIONS = ("true", "swap", "none")


def check_conditions(conditions: Sequence[str | bool]) -> tuple[str, ...]:
    """The condition names, checked. YAML reads an unquoted ``true`` as a boolean: it means ``"true"``."""
    conditions = ["true" if c is True else c for c in conditions]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions must be a non-empty list of {', '.join(CONDITIONS)}; got {list(conditions)}")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"conditions repeat: {list(conditions)}")
    return tuple(conditions)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation of ``range(n)`` with no fixed point (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    while True:  # rejection: about e (2.72) draws on average
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order


def donors(samples: Sequence[Sample], k: int, seed: int = 0) -> list[int]:
    """For every sample, the index of the sample whose history it borrows under ``swap``.

    Groups are (category, usable history length); a group with a single sample (or only
    one user) joins the rest of its category. A donor is always another user: samples
    of one user are never paired with each other.
    """
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_category[s.category].append(i)
    out = [-1] * len(samples)
    for category in sorted(by_category):
        members = by_category[category]
        groups: dict[int, list[int]] = defaultdict(list)
        for i in members:
            groups[min(len(samples[i].history), k)].append(i)
        leftovers: list[int] = []
        for size in sorted(groups):
            group = groups[size]
            if len({samples[i].user_id for i in group}) < 2:
                leftovers += group
                continue
            _assign(samples, group, rng, out)
        if leftovers:
            pool = leftovers if len({samples[i].user_id for i in leftovers}) >= 2 else members
            _assign(samples, pool, rng, out, only=leftovers)
    missing = [samples[i].sample_id for i, d in enumerate(out) if d < 0]
    if missing:
        raise ValueError(f"swap needs at least two users per category; no donor for {missing[:3]}")
    return out


def _assign(samples: Sequence[Sample], pool: list[int], rng: np.random.Generator, out: list[int],
            only: list[int] | None = None) -> None:
    """Donors within ``pool`` for the samples in ``only`` (default: all of ``pool``), never the same user."""
    targets = pool if only is None else only
    if only is None:
        for _ in range(100):
            order = derangement(len(pool), rng)
            if all(samples[pool[j]].user_id != samples[pool[i]].user_id for i, j in enumerate(order)):
                for i, j in enumerate(order):
                    out[pool[i]] = pool[j]
                return
    for i in targets:  # a user with several samples in a tiny pool: draw each donor on its own
        choices = [j for j in pool if samples[j].user_id != samples[i].user_id]
        out[i] = int(choices[rng.integers(len(choices))]) if choices else -1


def apply_condition(samples: Sequence[Sample], condition: str, k: int, seed: int = 0) -> list[Sample]:
    """The samples under ``condition`` (``true``, ``swap``, ``none``; the slot conditions keep them).

    Only ``history`` changes; ``sample_id``, ``user_id``, target and item stay, so rows of
    every condition pair up by sample id.
    """
    check_conditions([condition])
    if condition == "swap":
        chosen = donors(samples, k, seed)
        return [dataclasses.replace(s, history=samples[d].history) for s, d in zip(samples, chosen)]
    if condition == "none":
        return [dataclasses.replace(s, history=()) for s in samples]
    return list(samples)


def mask_slot_vectors(condition: str, kinds: np.ndarray, vectors: np.ndarray,
                      has_peers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot vectors and peer flags under ``his_only`` / ``diff_only`` (others: unchanged).

    ``his_only``: every diff slot gets the "no peers" input — the zero vector, flagged
    without peers, exactly what a review without peers gets. ``diff_only``: every his slot
    gets the zero vector.
    """
    from dep_lightning.data.prompt import DIFF, HIS

    if condition not in ("his_only", "diff_only"):
        return vectors, has_peers
    vectors, has_peers = vectors.copy(), has_peers.copy()
    drop = kinds == (DIFF if condition == "his_only" else HIS)
    vectors[drop] = 0.0
    if condition == "his_only":
        has_peers[drop] = False
    return vectors, has_peers
