"""Resuming training in the middle of an epoch exactly where it stopped.

Lightning 2.6 keeps the loop counters, weights, optimizer, LR schedule and callback
states in every checkpoint. For data it stores the ``state_dict()`` of each training
dataloader that has ``state_dict`` / ``load_state_dict`` (checkpoint key
``loops.fit_loop.state_dict.combined_loader``) and, on ``fit(ckpt_path=...)``, hands it
back to ``load_state_dict`` before the first batch is drawn. A plain ``DataLoader`` has
neither: Lightning then warns that the loader is not resumable and starts the
interrupted epoch again from its first batch, so the batches trained before the
interruption are trained on twice and the result differs from an uninterrupted run.

:class:`ResumableDataLoader` counts the batches its iterator has handed out in the
current epoch. On load it makes the next iteration start right after them — provided
the batch order is the same one (the batch sampler's ``state_dict``: seed, epoch, number
of batches). The count is taken where batches leave the loader, so it is exact with
worker processes too (they prefetch indices, not steps); Lightning does not prefetch
from a loader that has a length, so "handed out" is "trained on".

Nothing else needs restoring for an exact resume: training draws no random numbers
(no dropout; generation is seeded per batch), and the sampler derives each epoch's order
from ``seed + epoch``. ``tests/reliability/test_resume.py`` kills ``dep-lightning fit``
with SIGKILL and checks that the resumed run ends with the same weights and test
outputs as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a batch sampler with ``state_dict()`` and ``start_at(batch)``
    (:class:`~dep_lightning.data.batching.LengthBucketSampler`) whose position in the
    epoch is saved in Lightning checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for method in ("state_dict", "start_at"):
            if not callable(getattr(self.batch_sampler, method, None)):
                raise TypeError(f"ResumableDataLoader needs a batch_sampler with {method}(); "
                                f"got {type(self.batch_sampler).__name__}")
        self._handed_out = 0
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        # A generator: its body (and so the batch order) runs at the first batch, after
        # Lightning has set the epoch and loaded any checkpointed state.
        start = self._take_resume_point()
        self._handed_out = start
        if start:
            self.batch_sampler.start_at(start)
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def _take_resume_point(self) -> int:
        state, self._resume = self._resume, None
        if state is None or state.get("order") != self.batch_sampler.state_dict():
            return 0  # nothing to resume, or another order (next epoch, other seed or layout)
        done = int(state.get("batches", 0))
        return done if 0 < done < len(self) else 0

    def state_dict(self) -> dict[str, Any]:
        """Plain ints only, so checkpoints stay loadable with ``torch.load(weights_only=True)``."""
        return {"order": self.batch_sampler.state_dict(), "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)
