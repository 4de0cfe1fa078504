"""Checkpoints in DeepSpeed's folder layout, read without DeepSpeed.

Lightning's DeepSpeed strategy saves ``<name>.ckpt`` as a folder::

    <name>.ckpt/latest                                  (optional) the tag of the newest save
    <name>.ckpt/checkpoint/mp_rank_00_model_states.pt   the module's weights under "module",
                                                        and Lightning's own state (epoch, loops,
                                                        callbacks, hyper-parameters, …) beside them
    <name>.ckpt/checkpoint/*_optim_states.pt            one optimizer shard per process

Under DeepSpeed itself the engine reads the folder. Everywhere else (testing a DeepSpeed run
on one GPU or on CPU, DDP, scoring) :func:`read_deepspeed_folder` turns the model-states
file into an ordinary Lightning checkpoint: ``state_dict`` from ``module``, Lightning's keys
as they are, DeepSpeed's own bookkeeping dropped. ZeRO stage 1 and 2 keep whole weights in
that file; stage 3 partitions them (the file holds empty tensors), so its folders are
refused with the conversion command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MODEL_STATES = "mp_rank_00_model_states.pt"
#: DeepSpeed's keys in the model-states file; everything else is the client (Lightning) state.
DEEPSPEED_KEYS = frozenset({
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "csr_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size",
    "mp_world_size", "ds_config", "ds_version",
})
#: Prefixes of the module's keys when the engine wrapped the LightningModule (Lightning < 2.1).
WRAPPER_PREFIXES = ("_forward_module.", "module.")
CONVERT = ("python -c \"from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict "
           "as c; c('{path}', 'model.ckpt')\"")


def model_states_file(folder: str | Path) -> Path | None:
    """The model-states file of a DeepSpeed checkpoint folder (its ``latest`` tag, else
    ``checkpoint``); ``None`` when ``folder`` is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    latest = folder / "latest"
    tag = latest.read_text().strip() if latest.is_file() else "checkpoint"
    found = folder / tag / MODEL_STATES
    return found if found.is_file() else None


def is_deepspeed_folder(path: str | Path) -> bool:
    return model_states_file(path) is not None


def read_deepspeed_folder(folder: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """An ordinary Lightning checkpoint (``state_dict`` plus Lightning's keys) from a DeepSpeed
    folder saved with ZeRO stage 1 or 2; tensors and plain values only (``weights_only``)."""
    path = model_states_file(folder)
    if path is None:
        raise FileNotFoundError(f"{folder}: not a DeepSpeed checkpoint folder (no <tag>/{MODEL_STATES})")
    states = torch.load(path, map_location=map_location, weights_only=True)
    if "module" not in states:
        raise ValueError(f"{path}: no 'module' entry; not a DeepSpeed model-states file")
    module = states["module"] or {}
    if int((states.get("ds_config") or {}).get("zero_optimization", {}).get("stage", 0)) == 3 or \
            any(t.numel() == 0 for t in module.values() if isinstance(t, torch.Tensor)):
        raise ValueError(f"{folder}: a ZeRO stage 3 checkpoint keeps partitioned weights; convert it to one "
                         f"file first: {CONVERT.format(path=folder)}")
    checkpoint = {k: v for k, v in states.items() if k not in DEEPSPEED_KEYS}
    checkpoint["state_dict"] = {_unwrapped(k): v for k, v in module.items()}
    return checkpoint


def _unwrapped(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def deepspeed_folder_io():
    """A ``TorchCheckpointIO`` that also reads DeepSpeed folders (:func:`read_deepspeed_folder`)."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class DeepSpeedFolderIO(TorchCheckpointIO):
        def load_checkpoint(self, path, map_location=None, weights_only=None):
            if is_deepspeed_folder(path):
                return read_deepspeed_folder(path, map_location if map_location is not None else "cpu")
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    return DeepSpeedFolderIO()


def read_folders_outside_deepspeed(trainer, ckpt_path) -> bool:
    """Let a non-DeepSpeed trainer load ``ckpt_path`` when it is a DeepSpeed folder (a DeepSpeed
    strategy's engine reads its folders itself). Returns whether the reader was installed."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if not ckpt_path or not is_deepspeed_folder(ckpt_path) or isinstance(trainer.strategy, DeepSpeedStrategy):
        return False
    if type(trainer.strategy.checkpoint_io) is not TorchCheckpointIO:  # a user's own IO plugin decides itself
        return False
    trainer.strategy.checkpoint_io = deepspeed_folder_io()
    return True
