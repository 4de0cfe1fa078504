"""Batches with dynamic padding, and a length-bucketed batch sampler.

Each :class:`~dep_lightning.data.types.Example` is built once by the DataModule (token
ids, labels, slots and the slot vectors); collation only pads. Training batches are
right-padded full sequences; evaluation batches add the prompt alone, left-padded, for
batched generation (``data/types.py`` describes every field).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from dep_lightning.data.types import Batch, Example, PromptBatch, Slots

IGNORE_INDEX = -100


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``rows`` padded with ``value`` to one width (on the left or the right): ids, attention
    mask and each row's offset."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for b, row in enumerate(rows):
        offset = width - len(row) if left else 0
        ids[b, offset:offset + len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[b, offset:offset + len(row)] = 1
        offsets.append(offset)
    return ids, mask, offsets


def _ranks(kinds: Sequence[int]) -> list[int]:
    """Each slot's rank among the sample's slots of the same kind (0 = first in the prompt)."""
    seen: dict[int, int] = {}
    ranks = []
    for kind in kinds:
        ranks.append(seen.get(kind, 0))
        seen[kind] = ranks[-1] + 1
    return ranks


def _user_inputs(examples: Sequence[Example], dim: int) -> dict[str, torch.Tensor]:
    """Whole-history vectors (B, N, d) with their mask (B, N), and target item vectors (B, d)."""
    width = max(1, max(len(ex.user_vectors) for ex in examples))
    history = torch.zeros((len(examples), width, dim))
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for b, ex in enumerate(examples):
        n = len(ex.user_vectors)
        history[b, :n] = torch.from_numpy(ex.user_vectors)
        mask[b, :n] = True
    items = torch.from_numpy(np.stack([ex.item_vector for ex in examples]))
    return {"user_history": history, "user_history_mask": mask, "target_item": items}


def _slots(examples: Sequence[Example], offsets: Sequence[int], dim: int) -> Slots:
    positions = [(b, offsets[b] + p) for b, ex in enumerate(examples) for p in ex.slot_pos]
    vectors = [ex.slot_vec for ex in examples if len(ex.slot_pos)]
    # Examples of a user-slot prompt (embeddings: user) carry the vectors the user slot is made from.
    user = _user_inputs(examples, dim) if examples and examples[0].user_vectors is not None else {}
    return Slots(
        **user,
        positions=torch.as_tensor(positions, dtype=torch.long).reshape(-1, 2),
        kinds=torch.as_tensor([k for ex in examples for k in ex.slot_kind], dtype=torch.long),
        ranks=torch.as_tensor([r for ex in examples for r in _ranks(ex.slot_kind)], dtype=torch.long),
        vectors=torch.from_numpy(np.concatenate(vectors)) if vectors else torch.zeros((0, dim)),
        has_peers=torch.as_tensor(np.concatenate([ex.slot_peers for ex in examples]) if examples else [],
                                  dtype=torch.bool),
    )


def shared_prefix_length(examples: Sequence[Example]) -> int:
    """Leading tokens every example has in common, before any soft-prompt slot.

    These positions (the system prompt and the fixed start of the instruction) are the
    same for every sample and depend on no trainable parameter, so a model can compute
    their keys and values once (``GenerativeModule.lm_loss``). Computed over a whole
    split, so it does not depend on batch composition or order.
    """
    if not examples:
        return 0
    first = examples[0].input_ids
    limit = min(min([len(ex.input_ids) - 1, ex.prompt_length, *ex.slot_pos]) for ex in examples)
    n = 0
    while n < limit and all(ex.input_ids[n] == first[n] for ex in examples):
        n += 1
    return n


class Collator:
    """Pads examples into a :class:`~dep_lightning.data.types.Batch`. ``generation=True``
    also emits the left-padded prompts (``Batch.prompt``).

    ``prefix_length``: leading tokens shared by every example of the split
    (:func:`shared_prefix_length`), passed on as ``Batch.prefix_length``.
    """

    def __init__(self, pad_id: int, embedding_dim: int, generation: bool = False, prefix_length: int = 0):
        self.pad_id, self.dim, self.generation = pad_id, embedding_dim, generation
        self.prefix_length = prefix_length

    def __call__(self, examples: Sequence[Example]) -> Batch:
        ids, mask, offsets = pad_rows([ex.input_ids for ex in examples], self.pad_id, left=False)
        labels, _, _ = pad_rows([ex.labels for ex in examples], IGNORE_INDEX, left=False)
        prompt = None
        if self.generation:
            prompts = [ex.input_ids[: ex.prompt_length] for ex in examples]
            p_ids, p_mask, p_offsets = pad_rows(prompts, self.pad_id, left=True)
            prompt = PromptBatch(input_ids=p_ids, attention_mask=p_mask, slots=_slots(examples, p_offsets, self.dim),
                                 prefix_length=self.prefix_length)
        # SampleContext objects when the examples have them (data.init_args.context: true).
        context = [ex.context for ex in examples] if examples and examples[0].context is not None else None
        return Batch(
            input_ids=ids, attention_mask=mask, labels=labels, prefix_length=self.prefix_length,
            slots=_slots(examples, offsets, self.dim),
            sample_id=[ex.sample_id for ex in examples],
            category=[ex.category for ex in examples],
            user_id=[ex.user_id for ex in examples],
            item_id=[ex.item_id for ex in examples],
            reference=[ex.reference for ex in examples],
            history=[ex.history for ex in examples],
            retrieved=[ex.retrieved for ex in examples],
            latest=[ex.latest for ex in examples],
            context=context,
            prompt=prompt,
        )


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length (little padding), in a seeded random order per epoch.

    Indices are shuffled, cut into pools of ``pool`` global batches, sorted by length
    inside each pool and cut into global batches of ``batch_size * num_replicas``; the
    order of the global batches is shuffled again. ``set_epoch`` changes the order
    reproducibly.

    Several processes (DDP, DeepSpeed): every process builds the same global batches from
    the same seed and takes its own contiguous slice of ``batch_size`` samples of each, so
    one optimizer step sees the same samples as one process with ``batch_size *
    num_replicas``, the processes of a step hold similar lengths (none waits long for a
    slower one at the gradient all-reduce), and every process yields the same number of
    batches. Without ``drop_last`` a short last global batch is split as evenly as it
    goes; only when it has fewer samples than processes are the missing ones filled with
    the epoch's first samples (the one case where a sample is seen twice).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        if isinstance(lengths, Sampler):
            # Lightning re-instantiates batch samplers with its DistributedSampler as first argument.
            raise TypeError("LengthBucketSampler shards itself across processes (num_replicas, rank) and takes "
                            "lengths, not a sampler: set trainer.use_distributed_sampler: false "
                            "(configs/trainer/ddp.yaml does)")
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be >= 1, got {batch_size} and {pool}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.pool, self.drop_last = batch_size, shuffle, seed, pool, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "LengthBucketSampler":
        # Lightning calls set_epoch on ``loader.sampler`` and ``loader.batch_sampler.sampler``
        # at every epoch start; a batch sampler is found only through the latter.
        return self

    # Resuming mid-epoch (data/resumable.py): what fixes the order, and where iteration starts.
    _start = 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batches": len(self)}

    def start_at(self, batch: int) -> None:
        """Make the next iteration begin at ``batch`` of the epoch's batches."""
        self._start = batch

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches over all processes, each ``batch_size * num_replicas`` long (bar the last)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        size = self.batch_size * self.num_replicas
        span = size * self.pool
        batches = []
        for start in range(0, len(order), span):
            chunk = order[start:start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size].tolist() for i in range(0, len(chunk), size)]
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        if batches and len(batches[-1]) < self.num_replicas:  # too short to give every process a sample
            batches[-1] = batches[-1] + order[: self.num_replicas - len(batches[-1])].tolist()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _slice(self, batch: list[int]) -> list[int]:
        if len(batch) == self.batch_size * self.num_replicas:
            return batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return np.array_split(np.asarray(batch), self.num_replicas)[self.rank].tolist()  # a short last batch

    def _batches(self) -> list[list[int]]:
        return [self._slice(batch) for batch in self.global_batches()]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        return iter(self._batches()[start:])

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size * self.num_replicas)
        return full + (1 if rest and not self.drop_last else 0)


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices by decreasing length, ties in their original order: cut into consecutive
    batches, each batch holds prompts of similar length (and the first is the largest, so
    a batch that does not fit in memory fails at once)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class EvalShardSampler(DistributedSampler):
    """Evaluation order for one of several processes: whole batches, dealt out in turn.

    The sequence ``0..n-1`` is cut into batches of ``batch_size`` exactly as one process
    would; process ``rank`` takes batches ``rank, rank + num_replicas, …``. A
    ``DataLoader(batch_size=batch_size, shuffle=False)`` over these indices rebuilds
    exactly those batches, so every batch, and whatever is seeded per batch (generation),
    is the same as on one process. ``pad=False`` (test, predict): each sample once, the
    processes may get different numbers of batches. ``pad=True`` (validation, whose
    steps synchronise a logged loss): the processes with fewer batches repeat their
    first ones, so all run the same number of steps.

    ``order`` (a permutation of ``0..n-1``, e.g. :func:`longest_first`) replaces the
    sequence ``0..n-1`` before it is cut into batches.

    A ``DistributedSampler`` subclass, so Lightning keeps it instead of injecting its own.
    """

    def __init__(self, n: int, batch_size: int, num_replicas: int, rank: int, pad: bool,
                 order: Sequence[int] | None = None):
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need batch_size >= 1, num_replicas >= 1, 0 <= rank < num_replicas; "
                             f"got {batch_size}, {num_replicas}, {rank}")
        if order is not None and sorted(order) != list(range(n)):
            raise ValueError(f"order must be a permutation of 0..{n - 1}")
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=False)
        sequence = list(order) if order is not None else list(range(n))
        starts = list(range(0, n, batch_size))
        mine = starts[rank::num_replicas]
        if pad:
            # Only processes without the (possibly short) last batch fall short, so repeats
            # never follow a short batch and the DataLoader's cuts stay on batch boundaries.
            per_rank = -(-len(starts) // num_replicas)
            mine = ((mine or starts[:1]) * per_rank)[:per_rank]
        self.indices = [sequence[i] for start in mine for i in range(start, min(start + batch_size, n))]
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples
