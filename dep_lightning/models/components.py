"""The trainable parts of DEP: embedding refiners, projectors, and soft-prompt splicing.

Plain PyTorch on purpose: the LightningModule composes these, and they stay testable
(and reusable outside Lightning) on their own.

A *refiner* turns a review embedding ``e`` (d_in) into a latent ``z`` (``d_latent``) that a
projector maps to the LLM's hidden size. One refiner instance is shared by the ``his`` and
``diff`` inputs (paper eq. 5); the caller runs it once per input and sums the losses.
Three refiners express the paper's ablation (table 5):

- :class:`SparseAutoencoder` -- DEP proper: reconstruction + Bernoulli-KL sparsity.
- :class:`Autoencoder` -- "w/ AE": the same network, no sparsity term.
- :class:`IdentityRefiner` -- "w/o DR": the raw embedding goes straight to the projector.

Anything that satisfies :class:`Refiner` can take their place (``model.init_args.refiner``
with a ``class_path``; see :class:`~dep_lightning.models.dep_module.DEPModule`). Its
``name`` is the value of the ``refinement`` ablation axis its runs report, so it must be one
of that axis' values in ``dep_lightning/axes.py`` (add a value there for a new refiner).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "REFINERS",
    "Autoencoder",
    "IdentityRefiner",
    "Projector",
    "Refiner",
    "RefinerFactory",
    "SparseAutoencoder",
    "init_weights",
    "splice_soft_prompts",
]


@runtime_checkable
class Refiner(Protocol):
    """What DEP needs of a refiner: ``e`` (..., d_in) -> latent ``z`` (..., d_latent) and the
    reconstruction ``e_hat``, plus its two loss terms (0 where a refiner has none).

    ``mask`` (...) keeps the rows that count towards a loss: padded history slots and diff
    rows of reviews without peers are left out.
    """

    name: ClassVar[str]  # the ``refinement`` axis value of runs that use it (dep_lightning/axes.py)
    d_in: int
    d_latent: int

    def __call__(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode(self, e: torch.Tensor) -> torch.Tensor: ...

    def reconstruction_loss(self, e: torch.Tensor, e_hat: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor: ...

    def sparsity_loss(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor: ...


#: Builds a refiner for review vectors of the given size (``d_in``): a refiner class, or a
#: ``class_path`` with ``init_args`` in a config (everything but ``d_in``). Typed as returning
#: an ``nn.Module`` because the config parser resolves classes by subclass, not by protocol;
#: the module checks the :class:`Refiner` interface when it builds one.
RefinerFactory = Callable[[int], nn.Module]

# Keeps log(rho_hat) and log(1 - rho_hat) finite. A sigmoid mean only reaches 0 or 1 by
# float rounding, so this clamp is a numerical guard, not part of the model: inside
# [eps, 1 - eps] the KL gradient is untouched.
_RHO_EPS = 1e-6


def init_weights(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` inside ``module``.

    The paper (appendix C) initialises the trainable parts with Xavier-uniform.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _zero(like: torch.Tensor) -> torch.Tensor:
    # Losses are accumulated in float32 whatever the activations' dtype (bf16 autocast).
    return torch.zeros((), dtype=torch.float32, device=like.device)


def _select_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Flatten ``x`` (..., d) to rows (N, d), keeping only rows where ``mask`` (...) is true."""
    rows = x.reshape(-1, x.shape[-1])
    if mask is None:
        return rows
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the row shape {tuple(x.shape[:-1])}")
    return rows[mask.reshape(-1).to(torch.bool)]


class Autoencoder(nn.Module):
    """Encoder ``Linear -> sigmoid`` and decoder ``Linear``; no sparsity term ("w/ AE").

    The activation is the same as the SAE's so that the AE/SAE ablation differs only in
    the loss, not in the network.
    """

    name: ClassVar[str] = "ae"

    def __init__(self, d_in: int, d_latent: int = 256):
        super().__init__()
        if d_in <= 0 or d_latent <= 0:
            raise ValueError(f"d_in and d_latent must be positive, got {d_in} and {d_latent}")
        self.d_in = d_in
        self.d_latent = d_latent
        self.encoder = nn.Linear(d_in, d_latent)
        self.decoder = nn.Linear(d_latent, d_in)
        init_weights(self)

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(e))

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``e`` (..., d_in) -> ``(z, e_hat)`` with shapes (..., d_latent) and (..., d_in)."""
        z = self.encode(e)
        return z, self.decoder(z)

    def reconstruction_loss(
        self, e: torch.Tensor, e_hat: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """SmoothL1 (beta 1, mean over the kept rows' elements); ``mask`` (...) drops padding rows."""
        if e.shape != e_hat.shape:
            raise ValueError(f"e {tuple(e.shape)} and e_hat {tuple(e_hat.shape)} differ in shape")
        e, e_hat = _select_rows(e, mask), _select_rows(e_hat, mask)
        if e.shape[0] == 0:
            return _zero(e)
        return F.smooth_l1_loss(e_hat.float(), e.float())

    def sparsity_loss(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _zero(z)


class SparseAutoencoder(Autoencoder):
    """DEP's SAE: the autoencoder plus a KL(rho || rho_hat_j) sparsity penalty.

    Why sigmoid: the Bernoulli KL needs every unit's mean activation rho_hat_j in (0, 1).
    The reference implementation used GELU and clamped the mean into (0, 1); a unit whose
    batch mean is negative then sits on the clamp and gets zero sparsity gradient, so the
    penalty silently stops acting on it. A sigmoid keeps every activation in (0, 1), the
    KL is defined and has a nonzero gradient everywhere, and the clamp below only guards
    against float rounding.
    """

    name: ClassVar[str] = "sae"

    def __init__(self, d_in: int, d_latent: int = 256, rho: float = 0.05):
        super().__init__(d_in, d_latent)
        if not 0.0 < rho < 1.0:
            raise ValueError(f"sparsity target rho must be in (0, 1), got {rho}")
        self.rho = rho

    def sparsity_loss(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over latent units j of KL(rho || rho_hat_j).

        rho_hat_j is unit j's mean activation over the batch rows of ``z`` (..., d_latent)
        that ``mask`` (...) keeps -- e.g. leave out padded history slots, or diff rows of
        reviews without peers. No rows left: 0.
        """
        rows = _select_rows(z, mask)
        if rows.shape[0] == 0:
            return _zero(z)
        rho_hat = rows.float().mean(dim=0).clamp(_RHO_EPS, 1.0 - _RHO_EPS)
        rho = self.rho
        kl = rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))
        return kl.mean()

    def extra_repr(self) -> str:
        return f"rho={self.rho}"


class IdentityRefiner(nn.Module):
    """No dimensionality reduction ("w/o DR"): ``z = e_hat = e``, both losses 0."""

    name: ClassVar[str] = "none"

    def __init__(self, d_in: int):
        super().__init__()
        if d_in <= 0:
            raise ValueError(f"d_in must be positive, got {d_in}")
        self.d_in = d_in
        self.d_latent = d_in

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return e, e

    def reconstruction_loss(
        self, e: torch.Tensor, e_hat: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _zero(e)

    def sparsity_loss(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _zero(z)


#: The paper's refiners by their ``refinement`` name (the shorthand ``model.init_args.refinement``).
REFINERS: dict[str, type[nn.Module]] = {cls.name: cls for cls in (IdentityRefiner, Autoencoder, SparseAutoencoder)}


class Projector(nn.Module):
    """``M_his`` / ``M_diff``: Linear -> GELU -> Linear from the latent to the LLM hidden size."""

    def __init__(self, d_latent: int, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = d_model if hidden is None else hidden
        self.d_latent, self.d_model = d_latent, d_model
        self.net = nn.Sequential(nn.Linear(d_latent, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it computes in: float32 as built, bf16 when a strategy casts the module (DeepSpeed)."""
        return self.net[0].weight.dtype


def splice_soft_prompts(inputs_embeds: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``inputs_embeds`` (B, T, H) with ``vectors[k]`` at ``positions[k] = (b, t)``.

    Out of place, so the frozen embedding layer's output is never modified and autograd
    flows into ``vectors`` (and into ``inputs_embeds`` at the untouched positions, should
    it require grad). ``vectors`` are cast to ``inputs_embeds``' dtype and device: the
    projectors may run in fp32 while the backbone runs in bf16.
    """
    if inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds must be (batch, seq, hidden), got shape {tuple(inputs_embeds.shape)}")
    batch, seq, hidden = inputs_embeds.shape
    if positions.dim() != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2) rows of [batch, pos], got shape {tuple(positions.shape)}")
    if positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positions must be an integer tensor, got {positions.dtype}")
    if vectors.dim() != 2 or vectors.shape != (positions.shape[0], hidden):
        raise ValueError(
            f"vectors must be (N, hidden) = ({positions.shape[0]}, {hidden}), got shape {tuple(vectors.shape)}"
        )
    if positions.shape[0] == 0:
        return inputs_embeds.clone()
    positions = positions.to(device=inputs_embeds.device, dtype=torch.long)
    b, t = positions[:, 0], positions[:, 1]
    bad = (b < 0) | (b >= batch) | (t < 0) | (t >= seq)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise IndexError(
            f"soft-prompt position {k} = {positions[k].tolist()} is outside the batch of shape ({batch}, {seq})"
        )
    # Two vectors for one slot would make the result depend on write order.
    flat = b * seq + t
    if flat.unique().numel() != flat.numel():
        raise ValueError("positions contain duplicate (batch, pos) pairs; each slot takes one vector")
    # index_put (no trailing underscore) is the out-of-place form: it returns a new tensor.
    return inputs_embeds.index_put((b, t), vectors.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype))
