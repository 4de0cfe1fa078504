"""Narrow filters for framework messages that do not apply to this project's runs.

Each filter matches one message (a regular expression), its warning category and the module
that emits it, so every other warning still shows: ours, one caused by a user's config, and
any other Lightning or torch warning. ``tests/test_quiet_demo.py`` checks both sides.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Lightning warns when ``LightningCLI(args=...)`` is given while ``sys.argv`` holds arguments too.
CLI_ARGS = r"LightningCLI's args parameter is intended to run from within Python"
#: torch deprecated ``LeafSpec``; Lightning 2.6's combined data loader still constructs one.
LEAF_SPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
#: Lightning's advert for its cloud logger, logged whenever a Trainer has no LitLogger.
LITLOGGER_TIP = r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"
#: Lightning's device report when there is no GPU / TPU at all (a GPU that is there but unused still shows).
NO_GPU = r"GPU available: False, used: False$"
NO_TPU = r"TPU available: False, using: 0 TPU cores$"
#: Logged when the LR schedule asks ``trainer.estimated_stepping_batches`` before fit loads the data.
STEPPING_BATCHES = r"Loading `train_dataloader` to estimate number of stepping batches\.$"
#: Facts of a run that ``callbacks/summary.py`` (RunSummary) prints in one line each instead:
#: the seed (with the parameter counts), why fit stopped (with the best checkpoint) and the
#: checkpoint a fit resumes from or a test / score restores.
SEED = r"(\[rank: \d+\] )?Seed set to -?\d+$"
FIT_STOPPED = r"`Trainer\.fit` stopped: "
RESTORING = r"Restoring states from the checkpoint path at "
RESTORED = r"(Restored all states|Loaded model weights) from the checkpoint at "
#: Lightning warns when any module is in eval mode as training starts.
EVAL_MODE = r"Found {count} module\(s\) in eval mode at the start of training"


class _DropMessages(logging.Filter):
    """Drops log records whose message matches one of the patterns."""

    def __init__(self, *patterns: str):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


_INFO_FILTER = _DropMessages(LITLOGGER_TIP, NO_GPU, NO_TPU, STEPPING_BATCHES, FIT_STOPPED, RESTORING, RESTORED)
_SEED_FILTER = _DropMessages(SEED)


def quiet_framework() -> None:
    """Install the filters for framework messages that never apply to a ``dep-lightning`` run."""
    # cli.main dispatches its own argv to LightningCLI, so `args` and sys.argv are the same list by design.
    warnings.filterwarnings("ignore", message=CLI_ARGS, category=UserWarning, module=r"lightning\.pytorch\.cli")
    # Raised inside Lightning's own loader code (lightning/pytorch/utilities/_pytree.py), not ours to change.
    warnings.filterwarnings("ignore", message=LEAF_SPEC, category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
    # Lightning's info lines (rank_zero_info) that say nothing about a run: the litlogger tip is an
    # advert (runs log to files: CSV, W&B offline); the device lines on a machine without GPU / TPU;
    # a note on an internal step of sizing the LR schedule; and the lines whose facts RunSummary
    # prints in the run's own words (why fit stopped, which checkpoint was restored, the seed).
    # Every other info line still shows.
    import lightning.pytorch  # noqa: F401  (sets the logger rank_zero_info writes to)
    from lightning_utilities.core import rank_zero

    rank_zero.log.addFilter(_INFO_FILTER)
    logging.getLogger("lightning.fabric.utilities.seed").addFilter(_SEED_FILTER)


def frozen_eval_modules_only(model) -> int | None:
    """The number of modules in eval mode when every one of them sits inside a top-level
    child whose parameters are all frozen (the backbone); ``None`` otherwise."""
    frozen = [name for name, child in model.named_children()
              if any(True for _ in child.parameters()) and not any(p.requires_grad for p in child.parameters())]
    in_eval = [name for name, module in model.named_modules() if not module.training]
    inside = all(any(name == f or name.startswith(f + ".") for f in frozen) for name in in_eval)
    return len(in_eval) if in_eval and inside else None


def quiet_frozen_eval_modules(model) -> None:
    """Silence Lightning's "modules in eval mode" warning for ``model`` when the modules in
    eval mode are exactly inside its frozen parts; a trainable module left in eval mode still warns."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    count = frozen_eval_modules_only(model)
    if count is not None:
        # The frozen backbone is in eval mode on purpose (no dropout in a model that is not trained).
        warnings.filterwarnings("ignore", message=EVAL_MODE.format(count=count), category=PossibleUserWarning,
                                module=r"lightning\.pytorch\.loops\.fit_loop")
