"""What travels from the DataModule to a method: one :class:`Example` per sample, and
:class:`Batch` es of them.

An :class:`Example` is computed once per sample in ``DEPDataModule.build_examples`` and
kept for the run; the :class:`~dep_lightning.data.batching.Collator` only pads examples
into a :class:`Batch` (token ids, labels, the soft-prompt :class:`Slots`) and, for
generation, a left-padded :class:`PromptBatch`.

Method-specific inputs are opt-in. Fields that only some methods read are ``None``
unless the data configuration builds them (:data:`OPTIONAL_INPUTS` names the setting);
a method declares the ones it reads in its ``inputs`` class attribute, and the
DataModule refuses a method whose inputs its configuration does not build, before any
example is built (``DEPDataModule.check_inputs``).

The batch types are plain, not frozen, dataclasses: Lightning moves a batch to the
device by copying the dataclass and setting each field on the copy, which a frozen
dataclass refuses. Nothing else assigns to them; treat them as immutable and use
:func:`dataclasses.replace` for a variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from dep_lightning.data.context import SampleContext

#: Optional inputs a method may read, and the data setting that builds each:
#: ``(option of data.init_args, the value that builds it)``.
OPTIONAL_INPUTS: dict[str, tuple[str, str]] = {
    "context": ("context", "true"),
    "user_history": ("prompt.embeddings", "user"),
    "user_history_mask": ("prompt.embeddings", "user"),
    "target_item": ("prompt.embeddings", "user"),
}


@dataclass(frozen=True, kw_only=True, eq=False)
class Example:
    """One sample, encoded once: everything a batch holds about it, unpadded.

    Compared by identity: equality of its array fields has no single meaning."""

    # Identity, copied into prediction and score rows. ``reference`` is the target review
    # text the generated one is compared with.
    sample_id: str
    category: str
    user_id: str
    item_id: str
    reference: str

    # Tokens: prompt + target ids, the target's labels (-100 on the prompt), and where the
    # prompt ends (generation feeds ``input_ids[:prompt_length]``).
    input_ids: list[int]
    labels: list[int]
    prompt_length: int

    # Soft-prompt slots in prompt order: token position, kind (``data/prompt.py``: HIS,
    # DIFF, INSTRUCTION, USER), the vector the method fills the slot from (n, d) (zero for
    # slots a method fills on its own), and whether it has peers (False only for a diff
    # slot of a review nobody else reviewed; its vector is the zero vector).
    slot_pos: list[int]
    slot_kind: list[int]
    slot_vec: np.ndarray
    slot_peers: np.ndarray

    # Texts: the history reviews the prompt shows (ascending time; the prediction rows keep
    # them to measure copying), the K retrieved (ascending time) and the user's most recent
    # review, which the copy baselines answer with.
    history: list[str]
    retrieved: list[str]
    latest: str

    # Optional (see OPTIONAL_INPUTS). ``context`` (``context: true``): the retrieved reviews
    # with their items and peers, for the multi-stage prompting methods (PAG, DPL).
    # ``user_vectors`` (n, d) and ``item_vector`` (d,) (``prompt.embeddings: user``): the
    # user's whole history and the target item, which PPlug's input-aware attention reads.
    context: SampleContext | None = None
    user_vectors: np.ndarray | None = None
    item_vector: np.ndarray | None = None


@dataclass(kw_only=True)
class Slots:
    """The soft-prompt slots of a batch, flattened over its samples (N slots in all).

    ``positions`` (N, 2) holds ``(row, token position)`` in the padded ``input_ids`` the
    slots belong to; ``kinds`` (N,) the slot kinds; ``ranks`` (N,) each slot's rank among
    its sample's slots of the same kind (0 = first in the prompt); ``vectors`` (N, d) the
    review vectors (his / diff) the slots are computed from; ``has_peers`` (N,) False for
    a diff slot whose review has no peers (left out of the refiner's losses).
    """

    positions: torch.Tensor
    kinds: torch.Tensor
    ranks: torch.Tensor
    vectors: torch.Tensor
    has_peers: torch.Tensor

    # PPlug's user inputs, per sample (``prompt.embeddings: user``, else None): the whole
    # history's vectors (B, M, d) with their mask (B, M), and the target item's (B, d).
    user_history: torch.Tensor | None = None
    user_history_mask: torch.Tensor | None = None
    target_item: torch.Tensor | None = None

    @classmethod
    def empty(cls, device: torch.device | str | None = None) -> "Slots":
        """No slot at all: a prompt of plain token ids (e.g. a multi-stage method's stage prompts)."""
        return cls(positions=torch.zeros((0, 2), dtype=torch.long, device=device),
                   kinds=torch.zeros(0, dtype=torch.long, device=device),
                   ranks=torch.zeros(0, dtype=torch.long, device=device),
                   vectors=torch.zeros((0, 0), device=device),
                   has_peers=torch.zeros(0, dtype=torch.bool, device=device))


@dataclass(kw_only=True)
class PromptBatch:
    """Prompts alone, left-padded (B, P), for batched generation; ``slots`` index these rows.
    ``prefix_length``: the split's shared leading tokens (as ``Batch.prefix_length``), counted
    from each row's first real token; the native decoder reads their keys and values from
    the shared-prefix cache."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slots: Slots
    prefix_length: int = 0


@dataclass(kw_only=True)
class Batch:
    """A padded batch of examples (B samples)."""

    # What the language model reads: prompt + target, right-padded (B, T); labels are -100
    # outside the target. ``prefix_length``: leading tokens every example of the split shares
    # (``batching.shared_prefix_length``), whose keys and values training computes once.
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    slots: Slots
    prefix_length: int = 0

    # Identity, one entry per sample, for prediction and score rows.
    sample_id: list[str]
    category: list[str]
    user_id: list[str]
    item_id: list[str]
    reference: list[str]

    # Texts, one entry per sample (see :class:`Example`).
    history: list[list[str]]
    retrieved: list[list[str]]
    latest: list[str]

    # Optional: the samples' contexts (``context: true``, else None; see OPTIONAL_INPUTS).
    context: list[SampleContext] | None = None

    # Evaluation loaders (validation, test, predict) only: the prompts alone, for generation.
    prompt: PromptBatch | None = None
