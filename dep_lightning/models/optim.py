"""Optimiser and learning-rate schedule of the trainable methods, injectable from the config.

By default a method trains with AdamW and :class:`WarmupLinearDecay` (linear warm-up over
``warmup_ratio`` of the optimizer steps, then linear decay to 0), set by the method's own
``lr`` / ``weight_decay`` / ``warmup_ratio`` arguments, which the sweeps vary. Any other
optimiser or schedule comes from the config, as LightningCLI callables::

    model:
      init_args:
        optimizer:
          class_path: torch.optim.SGD
          init_args: {lr: 0.01, momentum: 0.9}
        lr_scheduler:
          class_path: torch.optim.lr_scheduler.CosineAnnealingLR
          init_args: {T_max: 200}

An injected optimiser replaces the default AdamW entirely (``lr`` and ``weight_decay`` are
then unused); an injected schedule replaces the warm-up. A schedule whose class takes a
``total_steps`` argument that the config leaves unset gets the run's number of optimizer
steps (``trainer.estimated_stepping_batches``), as the default does. Schedules are stepped
once per optimizer step. Whatever is injected is recorded in the run's ``manifest.json``
``options`` (so runs with different optimisers are different configurations, never seeds
of one) and in the checkpoint's hyperparameters as plain data.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Iterable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

__all__ = ["LRSchedulerCallable", "OptimizerCallable", "Optimization", "WarmupLinearDecay", "component_spec"]


class WarmupLinearDecay(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from ``1/warmup`` of the base rate to the full rate over ``ceil(warmup_ratio *
    total_steps)`` steps, then linear decay to 0 at ``total_steps``.

    Args:
        optimizer: the optimiser whose rates it scales.
        warmup_ratio: share of the steps spent warming up.
        total_steps: optimizer steps of the run (filled in from the trainer when left unset).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_ratio: float = 0.01, total_steps: int | None = None,
                 last_epoch: int = -1):
        if total_steps is None:
            raise ValueError("WarmupLinearDecay needs total_steps (a method fills it in from "
                             "trainer.estimated_stepping_batches)")
        if not 0.0 <= warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}")
        total = max(1, int(total_steps))
        warmup = int(math.ceil(warmup_ratio * total))
        self.warmup_steps, self.total_steps = warmup, total

        # A plain function (not a bound method), so LambdaLR's state_dict leaves it out and a
        # resumed run rebuilds it from the same arguments.
        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        super().__init__(optimizer, factor, last_epoch)


def _target(factory: Any) -> Any:
    """The class or function a config callable builds: jsonargparse hands ``class_path`` callables
    over as a ``functools.partial`` that carries the class among its positional arguments."""
    if isinstance(factory, functools.partial):
        return next((a for a in factory.args if isinstance(a, type)), factory.func)
    return factory


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def component_spec(factory: Any) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of an injected component as plain data (``None``: not injected)."""
    if factory is None:
        return None
    target = _target(factory)
    keywords = factory.keywords if isinstance(factory, functools.partial) else {}
    return {"class_path": f"{target.__module__}.{target.__qualname__}",
            "init_args": {k: _plain(v) for k, v in sorted(keywords.items())}}


def _takes_total_steps(factory: Any) -> bool:
    target = _target(factory)
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    keywords = factory.keywords if isinstance(factory, functools.partial) else {}
    return "total_steps" in parameters and keywords.get("total_steps") is None


class Optimization:
    """A method's optimiser and schedule: the default AdamW + warm-up, or injected callables.

    Args:
        lr, weight_decay: the default AdamW's.
        warmup_ratio: the default schedule's.
        optimizer: builds the optimiser from the trainable parameters (replaces AdamW).
        lr_scheduler: builds the schedule from the optimiser (replaces the warm-up).
    """

    def __init__(self, lr: float, weight_decay: float, warmup_ratio: float,
                 optimizer: OptimizerCallable | None = None, lr_scheduler: LRSchedulerCallable | None = None):
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler

    def describe(self) -> dict[str, Any]:
        """What was injected, as plain data (empty for the default, so default runs keep their identity)."""
        out = {}
        for key, factory in (("optimizer", self.optimizer), ("lr_scheduler", self.lr_scheduler)):
            if factory is not None:
                out[key] = component_spec(factory)
        return out

    def configure(self, parameters: Iterable[torch.nn.Parameter], total_steps: int) -> dict[str, Any]:
        """``configure_optimizers``' return value for these parameters and this many optimizer steps."""
        parameters = list(parameters)
        if self.optimizer is None:
            optimizer = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = self.optimizer(parameters)
        if self.lr_scheduler is None:
            scheduler = WarmupLinearDecay(optimizer, self.warmup_ratio, total_steps)
        elif _takes_total_steps(self.lr_scheduler):
            scheduler = self.lr_scheduler(optimizer, total_steps=total_steps)
        else:
            scheduler = self.lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
