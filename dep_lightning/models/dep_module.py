"""The DEP LightningModule: refiner + two projectors feeding soft prompts to a frozen LLM.

Loss (paper eq. 8): ``L = L_gen + λ (L_recon + γ L_sparse)``, where reconstruction and
sparsity are computed for the his and the diff vectors of the batch with one shared
refiner. Diff slots of reviews without peers carry the zero vector (see
``embeddings/peers.py``): they are projected like any other diff vector — so the model
learns one "no peers" prompt — but are left out of the refiner's losses.

:class:`NoUserControl` is the trained control: the same refiner and projectors, trained
the same way, but every slot's input is a learned vector that depends only on the slot
(kind and position), never on the user — generic prompt tuning. Whatever DEP gains over
it is attributable to the user signal rather than to training itself.

Checkpoints hold only the trainable weights and the hyperparameters; loading one builds
the frozen backbone afresh from its name and fills in the adapters.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from dep_lightning.data.prompt import DIFF, HIS
from dep_lightning.models.base import TINY, GenerationConfig, GenerativeModule, adamw_with_warmup  # noqa: F401 (TINY, GenerationConfig re-exported)
from dep_lightning.models.components import (Autoencoder, IdentityRefiner, Projector, SparseAutoencoder,
                                             splice_soft_prompts)

Refinement = Literal["sae", "ae", "none"]


def make_refiner(kind: Refinement, d_in: int, d_latent: int, rho: float) -> torch.nn.Module:
    if kind == "sae":
        return SparseAutoencoder(d_in, d_latent, rho=rho)
    if kind == "ae":
        return Autoencoder(d_in, d_latent)
    if kind == "none":
        return IdentityRefiner(d_in)
    raise ValueError(f"refinement must be 'sae', 'ae' or 'none', got {kind!r}")


class DEPModule(GenerativeModule):
    """DEP with every ablation of the paper as a constructor argument.

    Test runs also keep, per sample, the mean refiner latent of its his slots (SAE / AE
    only) in ``self.latents``; the test writer saves them as ``analysis/latents.npz``.

    Args:
        backbone: frozen causal LM: ``"smollm2-135m-instruct"``, a local HF folder, or ``"tiny"``.
        backbone_dtype: ``auto`` (bf16 where supported), ``bfloat16``, ``float32``, ``float16``.
        embedding_dim: size of the review vectors (set from the DataModule by the CLI).
        refinement: ``sae`` (DEP), ``ae`` (no sparsity), ``none`` (raw embedding, "w/o DR").
        latent_dim: the refiner's latent size d' (paper: 1024 -> 512).
        rho: target mean activation of the SAE units.
        lam: weight λ of the refiner losses.
        gamma: weight γ of the sparsity loss inside the refiner term.
        projector_hidden: hidden width of the 2-layer projectors (default: the LLM's hidden size).
        lr, weight_decay, warmup_ratio: AdamW with linear warm-up and linear decay.
        generation: decoding settings for validation / test / predict.
        seed: seeds the adapters' initialisation.
    """

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        backbone_dtype: str = "auto",
        embedding_dim: int = 384,
        refinement: Refinement = "sae",
        latent_dim: int = 256,
        rho: float = 0.05,
        lam: float = 100.0,
        gamma: float = 1e-3,
        projector_hidden: int | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.025,
        warmup_ratio: float = 0.01,
        generation: GenerationConfig = GenerationConfig(),
        seed: int = 0,
    ):
        super().__init__(backbone, backbone_dtype, generation, seed)
        self.save_plain_hyperparameters()
        hidden = self.backbone.config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.refiner = make_refiner(refinement, embedding_dim, latent_dim, rho)
            d_latent = self.refiner.d_latent
            self.proj_his = Projector(d_latent, hidden, projector_hidden)
            self.proj_diff = Projector(d_latent, hidden, projector_hidden)
        self.latents: list[dict[str, Any]] = []  # per test sample: mean his latent (analysis/latents.npz)

    method = "dep"

    def method_info(self) -> dict[str, Any]:
        return {"method": self.method, "refinement": self.hparams.refinement}

    # -- soft prompts ---------------------------------------------------------------------
    def slot_inputs(self, slots: dict[str, torch.Tensor]) -> torch.Tensor:
        """The vector each slot's soft prompt is computed from: the review's his / diff vector."""
        return slots["vectors"].float()

    def soft_prompts(self, slots: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Project every slot's vector; returns (N, hidden) and the refiner losses."""
        e = self.slot_inputs(slots)
        kinds, has_peers = slots["kinds"], slots["has_peers"]
        z, e_hat = self.refiner(e)
        his, diff = kinds == HIS, kinds == DIFF
        if not bool((his | diff).all()):
            raise ValueError(f"{type(self).__name__} fills his and diff slots only; the prompt has slot kinds "
                             f"{sorted(set(kinds.tolist()) - {HIS, DIFF})} (set data.init_args.prompt.embeddings "
                             f"to his, diff, his+diff or none)")
        prompts = e.new_zeros((e.shape[0], self.backbone.config.hidden_size))
        prompts = prompts.index_put((his.nonzero(as_tuple=True)[0],), self.proj_his(z[his]).float())
        prompts = prompts.index_put((diff.nonzero(as_tuple=True)[0],), self.proj_diff(z[diff]).float())
        peers = has_peers[diff]
        recon = (self.refiner.reconstruction_loss(e[his], e_hat[his])
                 + self.refiner.reconstruction_loss(e[diff], e_hat[diff], mask=peers))
        sparse = self.refiner.sparsity_loss(z[his]) + self.refiner.sparsity_loss(z[diff], mask=peers)
        return prompts, {"recon": recon, "sparse": sparse}

    def input_embeddings(self, input_ids: torch.Tensor, slots: dict[str, torch.Tensor]):
        embeds = self.backbone.get_input_embeddings()(input_ids)
        if slots["positions"].numel() == 0:
            zero = embeds.new_zeros((), dtype=torch.float32)
            return embeds, {"recon": zero, "sparse": zero}
        prompts, losses = self.soft_prompts(slots)
        return splice_soft_prompts(embeds, slots["positions"], prompts), losses

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        embeds, aux = self.input_embeddings(batch["input_ids"], batch["slots"])
        gen = self.lm_loss(embeds, batch["attention_mask"], batch["labels"], batch["input_ids"],
                            batch.get("prefix_length", 0))
        h = self.hparams
        total = gen + h.lam * (aux["recon"] + h.gamma * aux["sparse"])
        return {"loss": total, "loss_gen": gen, "loss_recon": aux["recon"], "loss_sparse": aux["sparse"]}

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for name in ("loss_gen", "loss_recon", "loss_sparse"):
            self.log(f"train/{name}", losses[name], batch_size=size)
        return self.attached(losses["loss"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        losses = self.losses(batch)
        self.log("val/loss", losses["loss_gen"], prog_bar=True, batch_size=batch["input_ids"].shape[0],
                 sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.latents = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        rows = super().test_step(batch, batch_idx)
        if self.hparams.refinement != "none":
            self._record_latents(batch)
        return rows

    @torch.no_grad()
    def _record_latents(self, batch: dict[str, Any]) -> None:
        slots = batch["prompt"]["slots"]
        his = slots["kinds"] == HIS
        if not bool(his.any()):
            return
        z = self.refiner.encode(self.slot_inputs(slots)[his]).float()
        owner = slots["positions"][his, 0]
        for b in owner.unique().tolist():
            self.latents.append({"sample_id": batch["sample_id"][b], "user_id": batch["user_id"][b],
                                 "z": z[owner == b].mean(0).cpu().numpy()})

    # -- optimisation ---------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        h = self.hparams
        return adamw_with_warmup(self, self.trainable_parameters(), h.lr, h.weight_decay, h.warmup_ratio)


class NoUserControl(DEPModule):
    """Trained control without user signal: generic prompt tuning through DEP's adapters.

    Every slot's input vector is a learned parameter chosen by the slot's kind (his /
    diff) and its rank among the sample's slots of that kind (0 = newest review shown);
    the refiner, projectors, losses and training loop are DEP's. Trainable parameters:
    DEP's plus ``2 * max_slots * embedding_dim`` for the input table. Prompt text (the
    reviews shown when ``with_text``) still carries the history, exactly as for DEP.

    Args:
        max_slots: slots per kind the table covers (at least the DataModule's ``k``).
        (all other arguments as :class:`DEPModule`)
    """

    method = "no_user"

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        backbone_dtype: str = "auto",
        embedding_dim: int = 384,
        refinement: Refinement = "sae",
        latent_dim: int = 256,
        rho: float = 0.05,
        lam: float = 100.0,
        gamma: float = 1e-3,
        projector_hidden: int | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.025,
        warmup_ratio: float = 0.01,
        generation: GenerationConfig = GenerationConfig(),
        seed: int = 0,
        max_slots: int = 8,
    ):
        super().__init__(backbone, backbone_dtype, embedding_dim, refinement, latent_dim, rho, lam, gamma,
                         projector_hidden, lr, weight_decay, warmup_ratio, generation, seed)
        self.save_plain_hyperparameters()
        generator = torch.Generator().manual_seed(seed + 1)
        # Unit-norm random starting points, like the L2-normalised review vectors they replace.
        table = torch.randn(2, max_slots, embedding_dim, generator=generator)
        self.slot_table = torch.nn.Parameter(table / table.norm(dim=-1, keepdim=True))

    def slot_inputs(self, slots: dict[str, torch.Tensor]) -> torch.Tensor:
        ranks = slots["ranks"]
        if ranks.numel() and int(ranks.max()) >= self.slot_table.shape[1]:
            raise ValueError(f"a sample has {int(ranks.max()) + 1} slots of one kind but max_slots="
                             f"{self.slot_table.shape[1]}; set model.init_args.max_slots >= data k")
        return self.slot_table[slots["kinds"], ranks]
