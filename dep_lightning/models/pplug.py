"""PPlug (paper table 1): one user embedding, from input-aware attention, as a soft prompt.

The user embedder reads *all* of the user's history review vectors (the DEP embedder's,
from the embedding cache) and weighs them by how well each matches the target item:

    w_i = softmax_i(<e_item, e_i> / τ),   u = Σ_i w_i e_i

where ``e_item`` embeds the target item's title and description with the same sentence
embedder. A trainable projector (2-layer MLP) maps ``u`` to the LLM's hidden size; it is
placed in the prompt's user slot right after a trainable *instruction embedding* (one
vector of the hidden size), both at the top of the user message. No review text is shown
(PPlug has no retrieval augmentation). The LLM stays frozen; only the projector and the
instruction embedding train, with DEP's loop (AdamW, linear warm-up and decay) and
trainable-only checkpoints.

Data: ``prompt.embeddings: user`` makes the DataModule put one instruction and one user
slot in each prompt and attach the whole-history and target-item vectors.

    dep-lightning fit --config configs/quickstart.yaml --config configs/baselines/pplug.yaml
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dep_lightning.data.prompt import INSTRUCTION, USER
from dep_lightning.data.types import Batch, Slots
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.base import GenerativeModule
from dep_lightning.models.components import Projector, splice_soft_prompts
from dep_lightning.models.generation import GenerationConfig
from dep_lightning.models.optim import LRSchedulerCallable, Optimization, OptimizerCallable


class InputAwareAttention(nn.Module):
    """Attention of a query (the target item) over a padded set of history vectors.

    Args:
        temperature: τ; with L2-normalised vectors the scores are cosines in [-1, 1], so
            τ = 1 gives mild preferences and smaller τ sharper ones.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def weights(self, query: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``query`` (B, d), ``history`` (B, N, d), ``mask`` (B, N) -> weights (B, N).

        Each row with at least one history vector sums to 1 over its unmasked entries;
        masked entries (padding) get 0, and a row without history gets all zeros.
        """
        if history.shape[:2] != mask.shape or query.shape != (history.shape[0], history.shape[2]):
            raise ValueError(f"shapes do not fit: query {tuple(query.shape)}, history {tuple(history.shape)}, "
                             f"mask {tuple(mask.shape)}")
        scores = torch.einsum("bd,bnd->bn", query, history) / self.temperature
        scores = scores.masked_fill(~mask, float("-inf"))
        empty = ~mask.any(dim=1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=1)
        return weights.masked_fill(~mask, 0.0)

    def forward(self, query: torch.Tensor, history: torch.Tensor, mask: torch.Tensor):
        """The user embeddings (B, d) and the attention weights (B, N)."""
        w = self.weights(query, history, mask)
        return torch.einsum("bn,bnd->bd", w, history), w


@register(MethodSpec("pplug", "PPlug", order=50))
class PPlugModule(GenerativeModule):
    """PPlug on the frozen backbone.

    Args:
        backbone, backbone_dtype: the frozen LLM (as :class:`~dep_lightning.models.dep_module.DEPModule`).
        embedding_dim: size of the review / item vectors (set from the DataModule by the CLI).
        projector_hidden: hidden width of the projector (default: the LLM's hidden size).
        temperature: τ of the input-aware attention.
        lr, weight_decay, warmup_ratio: the default optimisation, AdamW with linear warm-up and
            linear decay (:mod:`dep_lightning.models.optim`).
        generation: decoding settings for validation / test / predict.
        seed: seeds the projector's and the instruction embedding's initialisation.
        optimizer, lr_scheduler: injected instead of AdamW / the warm-up (:mod:`dep_lightning.models.optim`).
    """

    inputs = frozenset({"user_history", "user_history_mask", "target_item"})

    def __init__(self, backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 embedding_dim: int = 384, projector_hidden: int | None = None, temperature: float = 1.0,
                 lr: float = 1e-5, weight_decay: float = 0.025, warmup_ratio: float = 0.01,
                 generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 backbone_options: BackboneOptions = BackboneOptions(), optimizer: OptimizerCallable | None = None,
                 lr_scheduler: LRSchedulerCallable | None = None):
        super().__init__(backbone, backbone_dtype, generation, seed, backbone_options)
        self.save_plain_hyperparameters()
        self.optimization = Optimization(lr, weight_decay, warmup_ratio, optimizer, lr_scheduler)
        hidden = self.backbone.config.hidden_size
        tokens = self.backbone.get_input_embeddings().weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.attention = InputAwareAttention(temperature)
            self.projector = Projector(embedding_dim, hidden, projector_hidden)
            # Starts at the scale of the frozen token embeddings, like any input position.
            self.instruction = nn.Parameter(torch.randn(hidden) * tokens.detach().float().std())

    # -- soft prompts ---------------------------------------------------------------------
    def user_embedding(self, slots: Slots):
        """Per sample: the attention-pooled history vector (B, d) and its weights (B, N)."""
        if slots.user_history is None:
            raise ValueError("pplug reads the whole-history and target-item vectors: set "
                             "data.init_args.prompt.embeddings: user (configs/baselines/pplug.yaml does)")
        return self.attention(slots.target_item.float(), slots.user_history.float(), slots.user_history_mask.bool())

    def input_embeddings(self, input_ids: torch.Tensor, slots: Slots):
        embeds = self.backbone.get_input_embeddings()(input_ids)
        kinds, positions = slots.kinds, slots.positions
        is_user, is_instruction = kinds == USER, kinds == INSTRUCTION
        if positions.numel() == 0 or not bool(is_user.any()) or not bool((is_user | is_instruction).all()):
            raise ValueError("pplug needs prompts with exactly an instruction and a user slot: set "
                             "data.init_args.prompt.embeddings: user")
        user, _ = self.user_embedding(slots)
        vectors = self.projector(user.to(self.projector.dtype))[positions[:, 0]]
        vectors = torch.where(is_instruction[:, None], self.instruction.to(vectors.dtype).expand_as(vectors), vectors)
        zero = embeds.new_zeros((), dtype=torch.float32)
        return splice_soft_prompts(embeds, positions, vectors), {"recon": zero, "sparse": zero}

    def loss(self, batch: Batch) -> torch.Tensor:
        embeds, _ = self.input_embeddings(batch.input_ids, batch.slots)
        return self.lm_loss(embeds, batch.attention_mask, batch.labels, batch.input_ids, batch.prefix_length)

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.input_ids.shape[0])
        return self.attached(loss)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss = self.loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch.input_ids.shape[0], sync_dist=True)
        self.log_val_nll(loss, batch)

    def method_options(self) -> dict[str, Any]:
        return self.optimization.describe()
