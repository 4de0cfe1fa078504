"""The DEP LightningModule: refiner + two projectors feeding soft prompts to a frozen LLM.

Loss (paper eq. 8): ``L = L_gen + λ (L_recon + γ L_sparse)``, where reconstruction and
sparsity are computed for the his and the diff vectors of the batch with one shared
refiner. Diff slots of reviews without peers carry the zero vector (see
``embeddings/peers.py``): they are projected like any other diff vector — so the model
learns one "no peers" prompt — but are left out of the refiner's losses.

Checkpoints hold only the trainable weights and the hyperparameters; loading one builds
the frozen backbone afresh from its name and fills in the adapters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import torch

from dep_lightning.data.prompt import DIFF, HIS
from dep_lightning.models.backbone import end_of_turn_id, load_backbone, tiny_backbone
from dep_lightning.models.components import (Autoencoder, IdentityRefiner, Projector, SparseAutoencoder,
                                             splice_soft_prompts)

Refinement = Literal["sae", "ae", "none"]
TINY = "tiny"  # backbone name of the randomly initialised 2-layer test model


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings (paper: sampling with temperature 0.8, top-p 0.95).

    Args:
        max_new_tokens: cap on generated tokens.
        do_sample: sample (True) or greedy (False).
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        seed: base seed; each batch is seeded from it and its first sample id, so outputs
            do not depend on batch order or on what ran before.
    """

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def make_refiner(kind: Refinement, d_in: int, d_latent: int, rho: float) -> torch.nn.Module:
    if kind == "sae":
        return SparseAutoencoder(d_in, d_latent, rho=rho)
    if kind == "ae":
        return Autoencoder(d_in, d_latent)
    if kind == "none":
        return IdentityRefiner(d_in)
    raise ValueError(f"refinement must be 'sae', 'ae' or 'none', got {kind!r}")


def _stable_seed(seed: int, key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little") % (2**63)


class DEPModule(L.LightningModule):
    """DEP with every ablation of the paper as a constructor argument.

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
        super().__init__()
        if isinstance(generation, dict):  # as stored in a checkpoint's hyperparameters
            generation = GenerationConfig(**generation)
        # Hyperparameters are kept as plain values so checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["generation"])
        self.hparams["generation"] = asdict(generation)
        if backbone == TINY:
            self.backbone, self.tokenizer = tiny_backbone(seed=seed)
        else:
            self.backbone, self.tokenizer = load_backbone(backbone, dtype=backbone_dtype)
        self.end_of_turn = end_of_turn_id(self.tokenizer)
        hidden = self.backbone.config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.refiner = make_refiner(refinement, embedding_dim, latent_dim, rho)
            d_latent = self.refiner.d_latent
            self.proj_his = Projector(d_latent, hidden, projector_hidden)
            self.proj_diff = Projector(d_latent, hidden, projector_hidden)
        self.generation = generation
        # Checkpoints omit the frozen backbone; its weights come from `backbone` instead.
        self.strict_loading = False

    # -- soft prompts ---------------------------------------------------------------------
    def soft_prompts(self, slots: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Project every slot's vector; returns (N, hidden) and the refiner losses."""
        e = slots["vectors"].float()
        kinds, has_peers = slots["kinds"], slots["has_peers"]
        z, e_hat = self.refiner(e)
        his, diff = kinds == HIS, kinds == DIFF
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
        out = self.backbone(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
        h = self.hparams
        total = out.loss + h.lam * (aux["recon"] + h.gamma * aux["sparse"])
        return {"loss": total, "loss_gen": out.loss, "loss_recon": aux["recon"], "loss_sparse": aux["sparse"]}

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for name in ("loss_gen", "loss_recon", "loss_sparse"):
            self.log(f"train/{name}", losses[name], batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        losses = self.losses(batch)
        self.log("val/loss", losses["loss_gen"], prog_bar=True, batch_size=batch["input_ids"].shape[0],
                 sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self.predict_step(batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        texts = self.generate(batch["prompt"], key=batch["sample_id"][0])
        fields = ("sample_id", "user_id", "item_id", "category", "reference")
        return [{**{f: batch[f][i] for f in fields}, "prediction": text} for i, text in enumerate(texts)]

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt: dict[str, Any], key: str = "", generation: GenerationConfig | None = None) -> list[str]:
        """Generate for a left-padded prompt batch; returns only the new text per row."""
        g = generation or self.generation
        embeds, _ = self.input_embeddings(prompt["input_ids"], prompt["slots"])
        stop = sorted({self.end_of_turn, self.tokenizer.eos_token_id} - {None})
        kwargs = dict(max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stop)
        if g.do_sample:
            kwargs.update(temperature=g.temperature, top_p=g.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[embeds.device] if embeds.is_cuda else []):
            torch.manual_seed(_stable_seed(g.seed, key))
            # With inputs_embeds only, generate returns just the new tokens.
            out = self.backbone.generate(inputs_embeds=embeds.to(self.backbone.dtype),
                                         attention_mask=prompt["attention_mask"], **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # -- optimisation ---------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=h.lr, weight_decay=h.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(h.warmup_ratio * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints: trainable weights only ----------------------------------------------
    def trainable_state_keys(self) -> set[str]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return names | {n for n, _ in self.named_buffers() if not n.startswith("backbone.")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(self.trainable_state_keys() - set(checkpoint["state_dict"]))
        if missing:
            raise KeyError(f"checkpoint lacks trainable weights {missing[:5]} (of {len(missing)}): "
                           f"was it saved with another refinement or size?")
