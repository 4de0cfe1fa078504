"""Digests that decide whether work done before may be reused: of tensors, bit for bit, and
of a method's trainable state.

A run resumed into its run directory reuses rows only when they came from the same weights:
generated predictions (``callbacks/predictions.py``) are keyed on the run's config hash and
:func:`weights_fingerprint`; scored batches (``scoring.ScoreCache``) on :func:`weights_digest`,
which adds the method's hyperparameters (a scoring run's settings are not all in the
config file of the fit that trained it). Batches whose likelihood is the frozen backbone's
alone are shared among runs keyed on :func:`backbone_digest`.

The state hashed is what a checkpoint holds: the module's ``trainable_state_keys()`` (the
trainable weights and the buffers outside the frozen backbone, whose weights its name fixes),
else its trainable parameters and buffers.
"""

from __future__ import annotations

import hashlib
import json

import torch

__all__ = ["backbone_digest", "update_digest", "weights_digest", "weights_fingerprint"]


def update_digest(digest, tensor: torch.Tensor | None) -> None:
    """Feed one tensor to a hashlib digest, bit for bit (dtype and shape included)."""
    if tensor is None:
        digest.update(b"none")
        return
    tensor = tensor.detach().contiguous().cpu()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def _state_keys(module: torch.nn.Module) -> set[str]:
    if callable(getattr(module, "trainable_state_keys", None)):
        return set(module.trainable_state_keys())
    return {n for n, p in module.named_parameters() if p.requires_grad} | {n for n, _ in module.named_buffers()}


def _update_state(digest, module: torch.nn.Module) -> None:
    keep = _state_keys(module)
    for name, tensor in sorted(module.state_dict().items()):
        if name in keep:
            digest.update(name.encode())
            update_digest(digest, tensor)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of the state a checkpoint holds: a retrained or another checkpoint
    under the same config gives other outputs, so work done with it is not reused."""
    digest = hashlib.sha256()
    _update_state(digest, module)
    return digest.hexdigest()[:16]


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a method's hyperparameters (``module.hparams``) and of the state a
    checkpoint holds."""
    hparams = dict(getattr(module, "hparams", {}))
    digest = hashlib.sha256(json.dumps(hparams, sort_keys=True, default=str).encode())
    _update_state(digest, module)
    return digest.hexdigest()[:16]


def backbone_digest(module: torch.nn.Module, context: str = "") -> str:
    """sha256 (16 hex) of a method's frozen backbone: its class, its config and every weight and
    buffer, bit for bit (dtype included), and ``context`` (what else decides its outputs, such
    as the trainer's precision). Equal for two runs whose backbone computes the same."""
    backbone = module.backbone
    config = backbone.config.to_json_string(use_diff=False) if hasattr(backbone, "config") else ""
    digest = hashlib.sha256(f"{type(backbone).__qualname__}\n{config}\n{context}".encode())
    for name, tensor in backbone.state_dict(keep_vars=False).items():
        digest.update(name.encode())
        update_digest(digest, tensor)
    return digest.hexdigest()[:16]
