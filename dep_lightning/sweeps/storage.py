"""Where Optuna studies live and how they prune: shared by the sweep driver and workers
(``sweeps/optuna_sweep.py``) and by the pruning callback inside each trial's fit
(``sweeps/pruning.py``). Optuna only; Lightning is not imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def default_storage(root: str | Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'optuna.db'}"


def make_storage(url: str, heartbeat_interval: int = 30, grace_period: int | None = None):
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes share the file: wait for locks instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                      grace_period=grace_period or 2 * heartbeat_interval, **kwargs)


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be 'median' or 'none', got {name!r}")
