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

Two scale choices, each configurable, with the paper's form selectable (``none`` for both,
``configs/experiment/paper_scale.yaml``). The defaults are ``standardize`` and ``token``:
in the paper's form the user signal collapses (every soft prompt one vector; on planted
data swapping users changed the likelihood by nothing), and standardising the inputs is
what prevents it (``tests/models/test_collapse.py``, docs/personalization.md):

* ``input_norm: standardize`` z-scores every his / diff vector per dimension with the
  training split's statistics (his and diff separately; diff rows without peers left out),
  kept as buffers in the checkpoint. Sentence embeddings are unit-norm with a large shared
  component, so the raw per-dimension values are ~0.05 with a spread of a few hundredths:
  a sigmoid refiner then sits at 0.5 for every unit and every user, the reconstruction
  loss is already tiny at the start, and nothing forces the latent to vary with the
  input. Standardised inputs give the encoder pre-activations of unit scale.
* ``prompt_norm: token`` rescales each soft prompt to ``prompt_scale`` times the mean
  norm of the backbone's token embeddings; the projector decides its direction only.
  Unconstrained (``none``), the projectors are free to grow one large, nearly constant
  vector that dominates attention and drowns any per-user variation.

A third choice, off by default: ``slot_offset`` adds a learned vector per slot kind and
rank to every soft prompt. DEP's slots of one kind differ only by their reviews, while the
no-user control's per-rank inputs give it K distinct generic prompts per kind; on planted
data that positional capacity, not the user signal, made the control fit better
(docs/personalization.md). The offset gives DEP the same capacity without touching the
refiner or its losses.

:meth:`DEPModule.diagnostics` measures what would show a collapse: the latent's mean
activation against ρ and its spread across slots, the soft prompts' norm relative to the
token embeddings' and their spread across slots relative to their norm. Training logs
them under ``diag/`` every ``log_every_n_steps``; test runs write them to ``metrics.json``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from dep_lightning.axes import BY_KEY
from dep_lightning.data.errors import ConfigError
from dep_lightning.data.prompt import DIFF, HIS
from dep_lightning.data.types import Batch, Example, Slots
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.base import TINY, GenerativeModule  # noqa: F401 (TINY re-exported)
from dep_lightning.models.components import REFINERS, Projector, Refiner, RefinerFactory, splice_soft_prompts
from dep_lightning.models.generation import GenerationConfig
from dep_lightning.models.optim import LRSchedulerCallable, Optimization, OptimizerCallable

Refinement = Literal["sae", "ae", "none"]
InputNorm = Literal["none", "standardize"]
PromptNorm = Literal["none", "token"]


def make_refiner(refinement: str, d_in: int, d_latent: int, rho: float,
                 factory: RefinerFactory | None = None) -> Refiner:
    """The refiner a run uses: ``factory(d_in)`` when one is injected, else the paper's refiner
    named by ``refinement`` with the module's ``latent_dim`` and ``rho``."""
    if factory is None:
        if refinement not in REFINERS:
            raise ConfigError("model.init_args.refinement", refinement, f"one of {sorted(REFINERS)}")
        settings = {"sae": {"d_latent": d_latent, "rho": rho}, "ae": {"d_latent": d_latent}}.get(refinement, {})
        return REFINERS[refinement](d_in, **settings)
    refiner = factory(d_in)
    if not isinstance(refiner, Refiner) or not isinstance(refiner, torch.nn.Module):
        raise ConfigError("model.init_args.refiner", type(refiner).__name__,
                          "not an nn.Module with the Refiner interface of dep_lightning/models/components.py")
    allowed = list(BY_KEY["refinement"].values)
    if refiner.name not in allowed:
        raise ConfigError("model.init_args.refiner", f"{type(refiner).__name__} (name {refiner.name!r})",
                          f"not a value of the refinement axis {allowed}: add it to dep_lightning/axes.py")
    return refiner


@register(MethodSpec("dep", "DEP", order=70))
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
        lr, weight_decay, warmup_ratio: the default optimisation, AdamW with linear warm-up and
            linear decay (:mod:`dep_lightning.models.optim`).
        generation: decoding settings for validation / test / predict.
        seed: seeds the adapters' initialisation.
        input_norm: ``standardize`` (default; z-score slot vectors with the training split's
            statistics) or ``none`` (the paper: raw embeddings). See the module docstring.
        prompt_norm: ``token`` (default; each soft prompt rescaled to ``prompt_scale`` times the
            mean token-embedding norm) or ``none`` (the paper: the projector's raw output).
        prompt_scale: target soft-prompt norm in units of the mean token-embedding norm.
        slot_offset: add a learned vector per slot kind and rank to every soft prompt (before
            ``prompt_norm``), zero at the start (default off: the paper's prompts depend on the
            review only). It gives DEP's slots the positional capacity of the no-user control's
            per-rank inputs; see the module docstring.
        max_slots: slots per kind the offset table covers (at least the DataModule's ``k``).
        refiner: a refiner built from the config (``class_path`` + ``init_args``, everything but
            ``d_in``) instead of the one ``refinement`` names; the run then reports the refiner's
            own ``name`` as its refinement, and ``latent_dim`` / ``rho`` are unused.
        optimizer, lr_scheduler: injected instead of AdamW / the warm-up (:mod:`dep_lightning.models.optim`).
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
        input_norm: InputNorm = "standardize",
        prompt_norm: PromptNorm = "token",
        prompt_scale: float = 1.0,
        slot_offset: bool = False,
        max_slots: int = 8,
        backbone_options: BackboneOptions = BackboneOptions(),
        refiner: RefinerFactory | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__(backbone, backbone_dtype, generation, seed, backbone_options)
        self.save_plain_hyperparameters()
        self.optimization = Optimization(lr, weight_decay, warmup_ratio, optimizer, lr_scheduler)
        if input_norm not in ("none", "standardize") or prompt_norm not in ("none", "token"):
            raise ValueError(f"input_norm must be none|standardize and prompt_norm none|token, got "
                             f"{input_norm!r} and {prompt_norm!r}")
        if prompt_scale <= 0:
            raise ValueError(f"prompt_scale must be > 0, got {prompt_scale}")
        hidden = self.backbone.config.hidden_size
        # Per kind (his, diff): mean and standard deviation of the training inputs (input_norm).
        self.register_buffer("input_mean", torch.zeros(2, embedding_dim))
        self.register_buffer("input_std", torch.ones(2, embedding_dim))
        weight = self.backbone.get_input_embeddings().weight.detach().float()
        # Mean L2 norm of the LLM's own token embeddings: the reference scale of a soft prompt.
        self.token_norm = float(weight.norm(dim=-1).mean())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.refiner = make_refiner(refinement, embedding_dim, latent_dim, rho, refiner)
            d_latent = self.refiner.d_latent
            self.proj_his = Projector(d_latent, hidden, projector_hidden)
            self.proj_diff = Projector(d_latent, hidden, projector_hidden)
        # slot_offset: one hidden-size vector per (slot kind, rank), added to the projection.
        self.slot_offsets = torch.nn.Parameter(torch.zeros(2, max_slots, hidden)) if slot_offset else None
        # The axis value the run reports is the refiner's own (an injected one's may differ).
        self.hparams["refinement"] = self.refiner.name
        self.latents: list[dict[str, Any]] = []  # per test sample: mean his latent (analysis/latents.npz)
        self._diag_slots: list[tuple[torch.Tensor, ...]] = []  # test: (kinds, ranks, z, prompts)

    def method_info(self) -> dict[str, Any]:
        return {"method": self.method, "refinement": self.hparams.refinement}

    def method_options(self) -> dict[str, Any]:
        h = self.hparams
        return {"input_norm": h.input_norm, "prompt_norm": h.prompt_norm, "prompt_scale": h.prompt_scale,
                "slot_offset": h.slot_offset, **self.injected_options()}

    def injected_options(self) -> dict[str, Any]:
        """Injected components, recorded only when present so default runs keep their identity."""
        refiner = {"refiner": self.hparams.refiner} if self.hparams.get("refiner") else {}
        return {**refiner, **self.optimization.describe()}

    # -- soft prompts ---------------------------------------------------------------------
    def slot_inputs(self, slots: Slots) -> torch.Tensor:
        """The vector each slot's soft prompt is computed from: the review's his / diff vector,
        standardised when ``input_norm`` is ``standardize``.

        Returned in the adapters' own dtype: float32 as built, whatever the backbone's dtype;
        bf16 when a strategy casts the whole module (DeepSpeed). The standardisation itself
        is computed in float32."""
        e = slots.vectors.float()
        if self.hparams.input_norm == "standardize":
            kinds = slots.kinds.clamp(max=1)
            e = (e - self.input_mean[kinds].float()) / self.input_std[kinds].float()
        return e.to(self.adapter_dtype)

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype the refiner and projectors compute in (their parameters')."""
        return self.proj_his.dtype

    def fit_input_statistics(self, examples: list[Example]) -> None:
        """Set the standardisation statistics from training examples (``slot_vec``, ``slot_kind``, ``slot_peers``).

        Diff rows without peers (the zero vector) are left out; a kind without rows keeps 0 / 1."""
        import numpy as np

        for kind in (HIS, DIFF):
            rows = [ex.slot_vec[(np.asarray(ex.slot_kind) == kind) & ex.slot_peers] for ex in examples
                    if len(ex.slot_kind)]
            rows = np.concatenate(rows) if rows else np.zeros((0, self.input_mean.shape[1]), np.float32)
            if len(rows) < 2:
                continue
            mean, std = rows.astype(np.float64).mean(0), rows.astype(np.float64).std(0)
            self.input_mean[kind] = torch.as_tensor(mean, dtype=self.input_mean.dtype)
            # A dimension that never varies is left unscaled rather than divided by ~0.
            self.input_std[kind] = torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=self.input_std.dtype)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.hparams.input_norm == "standardize" and hasattr(datamodule, "split_examples"):
            # A resumed fit loads the checkpoint's statistics after this, so they stay the run's own.
            self.fit_input_statistics(datamodule.split_examples("train"))

    def checked_ranks(self, slots: Slots) -> torch.Tensor:
        """Every slot's rank among its sample's slots of its kind, checked against ``max_slots``."""
        ranks = slots.ranks
        if ranks.numel() and int(ranks.max()) >= self.hparams.max_slots:
            raise ValueError(f"a sample has {int(ranks.max()) + 1} slots of one kind but max_slots="
                             f"{self.hparams.max_slots}; set model.init_args.max_slots >= data k")
        return ranks

    def scale_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        if self.hparams.prompt_norm == "none":
            return prompts
        target = self.hparams.prompt_scale * self.token_norm
        norm = prompts.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)  # float32 even for bf16 adapters
        return prompts * (target / norm).to(prompts.dtype)

    def soft_prompts(self, slots: Slots) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Project every slot's vector; returns (N, hidden) and the refiner losses."""
        e = self.slot_inputs(slots)
        kinds, has_peers = slots.kinds, slots.has_peers
        z, e_hat = self.refiner(e)
        his, diff = kinds == HIS, kinds == DIFF
        if not bool((his | diff).all()):
            raise ValueError(f"{type(self).__name__} fills his and diff slots only; the prompt has slot kinds "
                             f"{sorted(set(kinds.tolist()) - {HIS, DIFF})} (set data.init_args.prompt.embeddings "
                             f"to his, diff, his+diff or none)")
        prompts = e.new_zeros((e.shape[0], self.backbone.config.hidden_size))  # the adapters' dtype
        prompts = prompts.index_put((his.nonzero(as_tuple=True)[0],), self.proj_his(z[his]).to(e.dtype))
        prompts = prompts.index_put((diff.nonzero(as_tuple=True)[0],), self.proj_diff(z[diff]).to(e.dtype))
        if self.slot_offsets is not None:
            prompts = prompts + self.slot_offsets[kinds, self.checked_ranks(slots)].to(prompts.dtype)
        prompts = self.scale_prompts(prompts)
        self._last = (kinds.detach(), slots.ranks.detach(), z.detach(), prompts.detach())
        peers = has_peers[diff]
        recon = (self.refiner.reconstruction_loss(e[his], e_hat[his])
                 + self.refiner.reconstruction_loss(e[diff], e_hat[diff], mask=peers))
        sparse = self.refiner.sparsity_loss(z[his]) + self.refiner.sparsity_loss(z[diff], mask=peers)
        return prompts, {"recon": recon, "sparse": sparse}

    def input_embeddings(self, input_ids: torch.Tensor, slots: Slots):
        embeds = self.backbone.get_input_embeddings()(input_ids)
        if slots.positions.numel() == 0:
            zero = embeds.new_zeros((), dtype=torch.float32)
            return embeds, {"recon": zero, "sparse": zero}
        prompts, losses = self.soft_prompts(slots)
        return splice_soft_prompts(embeds, slots.positions, prompts), losses

    def backbone_only(self, batch: Batch) -> bool:
        """A batch without slots (every sample without history: the ``none`` condition) gets the
        backbone's own token embeddings (:meth:`input_embeddings`): no weight of DEP's reaches it
        (unless a subclass scores another way: :meth:`scores_as`)."""
        return self.scores_as(DEPModule) and batch.slots.positions.numel() == 0

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        embeds, aux = self.input_embeddings(batch.input_ids, batch.slots)
        gen = self.lm_loss(embeds, batch.attention_mask, batch.labels, batch.input_ids, batch.prefix_length)
        h = self.hparams
        total = gen + h.lam * (aux["recon"] + h.gamma * aux["sparse"])
        return {"loss": total, "loss_gen": gen, "loss_recon": aux["recon"], "loss_sparse": aux["sparse"]}

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self._last = None
        losses = self.losses(batch)
        size = batch.input_ids.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for name in ("loss_gen", "loss_recon", "loss_sparse"):
            self.log(f"train/{name}", losses[name], batch_size=size)
        if self._last is not None:  # a few slots: cheap; the logger writes every log_every_n_steps
            for name, value in self.diagnostics([self._last]).items():
                self.log(f"diag/{name}", value, batch_size=size)
        return self.attached(losses["loss"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses = self.losses(batch)
        size = batch.input_ids.shape[0]
        self.log("val/loss", losses["loss_gen"], prog_bar=True, batch_size=size, sync_dist=True)
        self.log_val_nll(losses["loss_gen"], batch)

    def on_test_epoch_start(self) -> None:
        self.latents = []
        self._diag_slots = []

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        self._last = None
        rows = super().test_step(batch, batch_idx, dataloader_idx)
        scoring = self.scoring_conditions is not None
        if self._last is not None and (not scoring or self.scoring_conditions[dataloader_idx] == "true"):
            self._diag_slots.append(self._last)
        if self.hparams.refinement != "none" and not scoring:
            self._record_latents(batch)
        return rows

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics(self, parts=None) -> dict[str, float]:
        """What a collapse of the user signal looks like, over the given slots (default: the test slots).

        * ``latent_mean``: the refiner latent's mean activation (compare ``rho``), SAE / AE only;
        * ``latent_spread``: per latent unit, the standard deviation across slots, averaged;
        * ``prompt_norm_ratio``: mean soft-prompt norm / mean token-embedding norm;
        * ``prompt_spread``: per slot kind, the root of the summed per-dimension variance
          across slots over the mean norm (0: every slot gets one vector), averaged over kinds;
        * ``prompt_user_spread``: the same per slot kind *and rank*, averaged over the groups:
          what varies between samples at one slot position. Prompts that differ by position
          only (the no-user control's per-rank inputs, DEP's ``slot_offset``) have a
          ``prompt_spread`` above 0 but a ``prompt_user_spread`` of 0.
        """
        parts = self._diag_slots if parts is None else parts
        if not parts:
            return {}
        kinds = torch.cat([k for k, _, _, _ in parts])
        ranks = torch.cat([r for _, r, _, _ in parts])
        z = torch.cat([z.float() for _, _, z, _ in parts])
        prompts = torch.cat([p.float() for _, _, _, p in parts])
        out: dict[str, float] = {}
        if self.hparams.refinement != "none" and z.shape[0] > 1:
            out["latent_mean"] = float(z.mean())
            out["latent_spread"] = float(z.std(dim=0).mean())
        norms = prompts.norm(dim=-1)
        out["prompt_norm_ratio"] = float(norms.mean() / self.token_norm)

        def spread(groups: torch.Tensor) -> float | None:
            values = [float(prompts[groups == g].var(dim=0).sum().sqrt() / norms[groups == g].mean())
                      for g in groups.unique().tolist() if int((groups == g).sum()) > 1]
            return sum(values) / len(values) if values else None

        for key, groups in (("prompt_spread", kinds), ("prompt_user_spread", kinds * (int(ranks.max()) + 1) + ranks)):
            value = spread(groups)
            if value is not None:
                out[key] = value
        return out

    @torch.no_grad()
    def _record_latents(self, batch: Batch) -> None:
        slots = batch.prompt.slots
        his = slots.kinds == HIS
        if not bool(his.any()):
            return
        z = self.refiner.encode(self.slot_inputs(slots)[his]).float()
        owner = slots.positions[his, 0]
        for b in owner.unique().tolist():
            self.latents.append({"sample_id": batch.sample_id[b], "user_id": batch.user_id[b],
                                 "z": z[owner == b].mean(0).cpu().numpy()})


@register(MethodSpec("no_user", "No-User", order=60))
class NoUserControl(DEPModule):
    """Trained control without user signal: generic prompt tuning through DEP's adapters.

    Every slot's input vector is a learned parameter chosen by the slot's kind (his /
    diff) and, with ``per_rank``, its rank among the sample's slots of that kind (0 = newest
    review shown); the refiner, projectors, losses and training loop are DEP's. Trainable
    parameters: DEP's plus ``2 * max_slots * embedding_dim`` for the input table (``2 *
    embedding_dim`` without ``per_rank``). Prompt text (the reviews shown when
    ``with_text``) still carries the history, exactly as for DEP.

    ``per_rank: false`` is the control with DEP's exact capacity: DEP's slots of one kind
    differ only by their reviews, so a control whose slots differ by rank can learn K
    distinct prompts per kind where DEP, without a user signal, learns about one
    (docs/personalization.md measures what that is worth).

    Args:
        max_slots: slots per kind the table covers (at least the DataModule's ``k``).
        per_rank: one learned input per slot kind and rank (default) or per kind only.
        kwargs: every other argument of :class:`DEPModule` but ``slot_offset`` (the table
            already gives each rank its own input).
    """

    #: The slots' review vectors never reach the prompt (the table replaces them), and the peer
    #: flags only the refiner's losses: under ``swap`` without text the scored inputs are ``true``'s.
    score_ignores = frozenset({"vectors", "has_peers"})

    def __init__(self, max_slots: int = 8, per_rank: bool = True, **kwargs):
        super().__init__(max_slots=max_slots, slot_offset=False, **kwargs)
        # The hyperparameters are this class's arguments: a checkpoint's are parsed back as them
        # (LightningCLI with --ckpt_path), and slot_offset is not one. (Built by LightningCLI,
        # they are the config's arguments, which never hold it.)
        self.hparams.pop("slot_offset", None)
        self.hparams["per_rank"] = per_rank
        embedding_dim, seed, input_norm = self.hparams.embedding_dim, self.hparams.seed, self.hparams.input_norm
        generator = torch.Generator().manual_seed(seed + 1)
        table = torch.randn(2, max_slots if per_rank else 1, embedding_dim, generator=generator)
        if input_norm == "none":
            # Unit-norm random starting points, like the L2-normalised review vectors they replace.
            table = table / table.norm(dim=-1, keepdim=True)
        # (standardize: the table lives in the standardised space, where inputs have unit variance per dimension.)
        self.slot_table = torch.nn.Parameter(table)

    def method_options(self) -> dict[str, Any]:
        h = self.hparams
        return {"input_norm": h.input_norm, "prompt_norm": h.prompt_norm, "prompt_scale": h.prompt_scale,
                "per_rank": h.per_rank, **self.injected_options()}

    def slot_inputs(self, slots: Slots) -> torch.Tensor:
        if not self.hparams.per_rank:
            return self.slot_table[slots.kinds, torch.zeros_like(slots.ranks)]
        return self.slot_table[slots.kinds, self.checked_ranks(slots)]
