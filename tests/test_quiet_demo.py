"""The framework messages `make demo` used to print are filtered at their source, and only
those: each is triggered through the real Lightning / torch code path (no training), next to
an unrelated warning and a different Lightning warning that must still show."""

from __future__ import annotations

import logging
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dep_lightning.quiet import frozen_eval_modules_only, quiet_framework, quiet_frozen_eval_modules


@pytest.fixture
def recorded():
    """Every warning raised inside, recorded, with quiet_framework's filters in front."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_framework()
        yield caught


def messages(caught) -> list[str]:
    return [str(w.message) for w in caught]


def test_cli_args_warning_is_filtered(recorded, monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr(sys, "argv", ["dep-lightning", "fit", "--config", "x.yaml"])
    parser = SimpleNamespace(parse_args=lambda args: {"parsed": args})
    cli = SimpleNamespace()
    LightningCLI.parse_arguments(cli, parser, ["fit", "--config", "x.yaml"])
    assert cli.config == {"parsed": ["fit", "--config", "x.yaml"]}
    assert not any("args parameter" in m for m in messages(recorded))


def test_leafspec_deprecation_is_filtered(recorded):
    from lightning.pytorch.utilities._pytree import _tree_flatten

    flat, spec = _tree_flatten(torch.zeros(1))
    assert len(flat) == 1 and spec.is_leaf()
    assert not any("LeafSpec" in m for m in messages(recorded))


def test_info_noise_is_dropped_other_info_kept():
    from lightning.fabric.utilities.seed import seed_everything
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
    from lightning.pytorch.trainer.setup import _log_device_info
    from lightning_utilities.core import rank_zero

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    quiet_framework()
    rank_zero.log.addHandler(handler)
    seed_logger.addHandler(handler)
    try:
        # The real emitters: the litlogger tip, the device report of a CPU-only trainer, the seed.
        _LoggerConnector(SimpleNamespace(loggers=[])).configure_logger(False)
        if not torch.cuda.is_available():
            _log_device_info(SimpleNamespace(accelerator=object(), num_devices=1))
        seed_everything(7)
        # The lines whose facts RunSummary prints (tests/test_run_summary.py), as Lightning words them.
        for dropped in ("Loading `train_dataloader` to estimate number of stepping batches.",
                        "`Trainer.fit` stopped: `max_epochs=1` reached.",
                        "Restoring states from the checkpoint path at x.ckpt",
                        "Restored all states from the checkpoint at x.ckpt",
                        "Loaded model weights from the checkpoint at x.ckpt"):
            rank_zero.rank_zero_info(dropped)
        # Other info still shows: a GPU that is there, the precision plugin's choice.
        for kept in ("GPU available: True (cuda), used: False", "Using bfloat16 Automatic Mixed Precision (AMP)"):
            rank_zero.rank_zero_info(kept)
        # A message that only mentions a seed is not the seed line.
        seed_logger.info("Seed set to 7 for the sampler of trial 3")
    finally:
        rank_zero.log.removeHandler(handler)
        seed_logger.removeHandler(handler)
    assert seen == ["GPU available: True (cuda), used: False", "Using bfloat16 Automatic Mixed Precision (AMP)",
                    "Seed set to 7 for the sampler of trial 3"]


class FrozenBackboneModel(nn.Module):
    def __init__(self, adapter_eval: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Linear(2, 2))
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.adapter = nn.Linear(2, 2)
        if adapter_eval:
            self.adapter.eval()


def warn_eval_modules(model) -> None:
    from lightning.pytorch.loops.fit_loop import _FitLoop

    _FitLoop._warn_if_modules_in_eval_mode(SimpleNamespace(trainer=SimpleNamespace(lightning_module=model)))


def test_eval_mode_warning_filtered_only_for_the_frozen_backbone(recorded):
    model = FrozenBackboneModel()
    assert frozen_eval_modules_only(model) == 4  # the Sequential and its three layers
    quiet_frozen_eval_modules(model)
    warn_eval_modules(model)
    assert not any("eval mode" in m for m in messages(recorded))


def test_eval_mode_warning_still_shows_for_a_trainable_module(recorded):
    model = FrozenBackboneModel(adapter_eval=True)
    assert frozen_eval_modules_only(model) is None
    quiet_frozen_eval_modules(model)
    warn_eval_modules(model)
    assert any("Found 5 module(s) in eval mode" in m for m in messages(recorded))


def test_unrelated_warnings_still_show(recorded):
    from lightning.pytorch.utilities.rank_zero import rank_zero_warn

    warnings.warn("a warning of our own", UserWarning)
    # Another Lightning warning from the module whose CLI warning is filtered.
    warnings.warn_explicit("some other LightningCLI warning", UserWarning, "cli.py", 1,
                           module="lightning.pytorch.cli")
    # The filtered texts raised from elsewhere (our code, a user's module) are not hidden either.
    warnings.warn("LightningCLI's args parameter is intended to run from within Python", UserWarning)
    rank_zero_warn("Found 3 module(s) in eval mode at the start of training.")
    assert messages(recorded) == [
        "a warning of our own",
        "some other LightningCLI warning",
        "LightningCLI's args parameter is intended to run from within Python",
        "Found 3 module(s) in eval mode at the start of training.",
    ]
