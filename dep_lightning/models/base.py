"""What every method shares: the frozen backbone, the LM loss and likelihood scoring, checkpoints;
generation and prediction rows come from ``models/generation.py``.

Methods (``manifest.json``'s ``method``):

* trained on the frozen LLM — ``dep`` (:class:`~dep_lightning.models.dep_module.DEPModule`),
  ``no_user`` (:class:`~dep_lightning.models.dep_module.NoUserControl`), ``pplug``;
* prompting only — ``non_perso``, ``rag`` (:class:`PromptingModule`), ``pag``, ``dpl``;
* no model — ``copy_recent``, ``copy_concat`` (:class:`~dep_lightning.models.copy.CopyBaseline`).

Output hygiene is the same for every generating method: decoding stops at the
end-of-turn (or eos) token and the text is cut there; how many tokens were generated and
whether ``max_new_tokens`` was hit are recorded per sample (``predictions/test.jsonl``).
Echo and copy detection are measured on the rows (``metrics/hygiene.py``), never used to
filter them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import asdict
from typing import Any

import lightning as L
import torch

from dep_lightning.data.batching import IGNORE_INDEX
from dep_lightning.data.types import Batch, Slots
from dep_lightning.fingerprints import update_digest
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.backbone import (
    BackboneOptions,
    as_backbone_options,
    end_of_turn_id,
    load_backbone,
    tiny_backbone,
)
from dep_lightning.models.generation import GenerationConfig, GenerationMixin, as_generation_config, prediction_rows
from dep_lightning.models.optim import Optimization, component_spec


@functools.lru_cache(maxsize=None)
def _cache_argument_of(body_class: type) -> str:
    """The KV-cache keyword of a Hugging Face body: ``cache`` (transformers 5) or ``past_key_values`` (4.x).

    Looked up once per class, not in every training step."""
    return "cache" if "cache" in inspect.signature(body_class.forward).parameters else "past_key_values"


TINY = "tiny"  # backbone name of the randomly initialised 2-layer test model
#: Constructor arguments holding config-injected callables (kept in hparams as plain specs).
INJECTED = ("optimizer", "lr_scheduler", "refiner")


class MethodMixin:
    """Identity of a method for the results registry."""

    method: str = "unknown"
    #: The optional batch inputs the method reads (``data/types.py`` OPTIONAL_INPUTS); the
    #: DataModule refuses, at setup, a configuration that does not build them.
    inputs: frozenset[str] = frozenset()

    def method_info(self) -> dict[str, Any]:
        """``method`` and the model-side ablation keys (``refinement``)."""
        return {"method": self.method, "refinement": None}

    def method_options(self) -> dict[str, Any]:
        """Settings that change what a method computes beyond its ablation keys (``manifest.json``
        ``options``): runs that differ in them are different configurations, never seeds of one."""
        return {}

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


SLOT_INPUTS = ("positions", "kinds", "ranks", "vectors", "has_peers", "user_history", "user_history_mask",
               "target_item")


def inputs_digest(batch: Batch, ignore: frozenset[str] = frozenset()) -> str:
    """A digest of the tensors of a teacher-forced batch (token ids, mask, labels, the shared
    prefix length and each soft-prompt slot input but those named in ``ignore``), bit for bit."""
    digest = hashlib.sha256(str(batch.prefix_length).encode())
    tensors = [batch.input_ids, batch.attention_mask, batch.labels]
    tensors += [getattr(batch.slots, name) for name in SLOT_INPUTS if name not in ignore]
    for tensor in tensors:
        update_digest(digest, tensor)
    return digest.hexdigest()


class GenerativeModule(MethodMixin, GenerationMixin, L.LightningModule):
    """A frozen causal LM that generates from the DataModule's prompts.

    Subclasses add trainable parts by overriding :meth:`input_embeddings` (soft prompts
    spliced into the token embeddings). Checkpoints keep only trainable weights and
    buffers outside the backbone; loading one builds the backbone afresh from its name.

    Args:
        backbone: ``"smollm2-135m-instruct"``, a local HF folder, or ``"tiny"``.
        backbone_dtype: ``auto`` (bf16 on capable GPUs and bf16-native CPUs, else fp32), ``bfloat16``,
            ``float32``, ``float16``.
        generation: decoding settings for validation / test / predict.
        seed: seeds the tiny backbone, any adapters' initialisation and (with
            ``generation.seed``) sampling; the CLI sets it from ``seed_everything``.
        backbone_options: attention kernel, gradient checkpointing, downloads
            (:class:`~dep_lightning.models.backbone.BackboneOptions`).
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 backbone_options: BackboneOptions = BackboneOptions()):
        super().__init__()
        self.backbone_options = as_backbone_options(backbone_options)
        if backbone == TINY:
            self.backbone, self.tokenizer = tiny_backbone(seed=seed, options=self.backbone_options)
        else:
            self.backbone, self.tokenizer = load_backbone(backbone, dtype=backbone_dtype, options=self.backbone_options)
        if self.backbone_options.gradient_checkpointing:
            # Checkpointed layers would run a cached prefix's layers twice; recompute it instead.
            self.cache_shared_prefix = False
        self.end_of_turn = end_of_turn_id(self.tokenizer)
        self.generation = as_generation_config(generation)
        self.seed = seed
        # Checkpoints omit the frozen backbone; its weights come from `backbone` instead.
        self.strict_loading = False

    def save_plain_hyperparameters(self, ignore: tuple[str, ...] = ()) -> None:
        """save_hyperparameters of the calling ``__init__``, with the GenerationConfig as a
        dict and injected components (optimizer, schedule, refiner) as their ``class_path``
        and ``init_args``, so checkpoints load with ``torch.load(weights_only=True)``."""
        frame = inspect.currentframe().f_back
        injected = {k: v for k, v in frame.f_locals.items() if k in INJECTED}
        self.save_hyperparameters(ignore=["generation", "backbone_options", *INJECTED, *ignore], frame=frame)
        self.hparams["generation"] = asdict(self.generation)
        self.hparams["backbone_options"] = asdict(self.backbone_options)
        self.hparams.update({k: component_spec(v) for k, v in injected.items()})

    # -- optimisation ---------------------------------------------------------------------
    #: Set by trainable methods (:class:`~dep_lightning.models.optim.Optimization`).
    optimization: Optimization | None = None

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.optimization is None:
            raise RuntimeError(f"{self.method} has nothing to train: run `dep-lightning test`")
        return self.optimization.configure(self.trainable_parameters(), self.trainer.estimated_stepping_batches)

    # -- prompts --------------------------------------------------------------------------
    def input_embeddings(self, input_ids: torch.Tensor, slots: Slots):
        """Token embeddings with any soft prompts spliced in; returns (embeds, aux losses)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        zero = embeds.new_zeros((), dtype=torch.float32)
        return embeds, {"recon": zero, "sparse": zero}

    def lm_loss(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                input_ids: torch.Tensor | None = None, prefix_length: int = 0) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled (target) positions.

        Two kinds of frozen work are skipped, neither changing the loss beyond float rounding
        (``tests/models/test_lm_loss.py``; speed in docs/performance.md):

        * the LM head runs only where a label is: the prompt's logits (most of a sequence,
          each a vocabulary-sized row) are never computed;
        * with ``prefix_length`` > 0 (the leading tokens every sample of the split shares,
          ``Batch.prefix_length``) and gradients on, those tokens' keys and values come
          from a cache computed once by the frozen LLM, so they are neither run forward
          nor backward again. They hold no soft prompt, so no trainable parameter reaches them.

        Backbones whose logits are post-processed (soft-capping, scaling) or that do not
        expose ``model`` / ``lm_head`` take the Hugging Face ``labels=`` path instead.
        """
        body, head = self._body_and_head()
        if body is None:
            return self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels).loss
        use = torch.is_grad_enabled()
        hidden, p = self._hidden_after_prefix(body, embeds, attention_mask, input_ids, prefix_length if use else 0)
        targets = labels[:, p + 1:]
        keep = targets != IGNORE_INDEX
        logits = head(hidden[:, :-1][keep]).float()
        return torch.nn.functional.cross_entropy(logits, targets[keep])

    def _hidden_after_prefix(self, body, embeds: torch.Tensor, attention_mask: torch.Tensor,
                             input_ids: torch.Tensor | None, prefix_length: int) -> tuple[torch.Tensor, int]:
        """The body's last hidden states of a right-padded batch and the number ``p`` of leading
        positions they leave out: the shared prefix, read from its cache, when every row holds
        the same ``prefix_length`` plain tokens first; otherwise all positions (``p`` = 0)."""
        p = int(prefix_length)
        if p > 0 and input_ids is not None and self.cache_shared_prefix and embeds.shape[1] > p:
            prefix = input_ids[:, :p]
            if bool((prefix == prefix[:1]).all()):
                cache = self._prefix_cache(body, prefix[0], embeds)
                hidden = body(inputs_embeds=embeds[:, p:], attention_mask=attention_mask, use_cache=True,
                              **{self._cache_argument(body): cache}).last_hidden_state
                return hidden, p
        return body(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state, 0

    def _body_and_head(self):
        """The backbone's transformer body and LM head when its logits are the head's plain
        output (no soft-capping or scaling), so the head can run at target positions only;
        ``(None, None)`` otherwise."""
        body, head = getattr(self.backbone, "model", None), getattr(self.backbone, "lm_head", None)
        config = self.backbone.config
        plain = (getattr(config, "final_logit_softcapping", None) is None
                 and getattr(config, "logit_scale", 1) in (1, None))
        return (body, head) if body is not None and head is not None and plain else (None, None)

    def lm_nll(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
               input_ids: torch.Tensor | None = None, prefix_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample teacher-forced negative log-likelihood of the labelled (target) tokens.

        Returns ``(nll, tokens)``, both (B,): the summed NLL in nats (float32) and the number
        of target tokens of each row. One forward pass, the LM head only at target positions,
        and the shared prefix (``input_ids`` with ``prefix_length``) read from the cache that
        training and the native decoder use (as :meth:`lm_loss`). Rows are right-padded, so a
        row's values do not depend on the other rows of its batch beyond float rounding.
        """
        body, head = self._body_and_head()
        if body is None:
            targets = labels[:, 1:]
            keep = targets != IGNORE_INDEX
            logits = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask).logits[:, :-1][keep].float()
        else:
            hidden, p = self._hidden_after_prefix(body, embeds, attention_mask, input_ids, prefix_length)
            targets = labels[:, p + 1:]
            keep = targets != IGNORE_INDEX
            logits = head(hidden[:, :-1][keep]).float()
        per_token = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
        rows = keep.nonzero(as_tuple=True)[0]
        nll = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add(0, rows, per_token)
        return nll, keep.sum(dim=1)

    def attached(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss``, connected to every trainable parameter with a zero gradient if it is not already.

        A batch whose prompts hold no soft prompt (every history review dropped to fit the
        length budget, or a user without history) gives a loss no trainable parameter
        reaches. Backward would then fail, and under DDP the processes would disagree on
        which gradients to all-reduce; with this the step runs and its gradients are zero.
        """
        if loss.requires_grad or not torch.is_grad_enabled():
            return loss
        trainable = [p for p in self.parameters() if p.requires_grad]
        return loss + sum(p.sum() for p in trainable) * 0.0 if trainable else loss

    # Read the shared prefix from a KV cache in training (lm_loss); the cache itself lives in
    # ``self._prefix_kv``: {(token ids, device, dtype, autocast): per-layer (k, v)}.
    cache_shared_prefix = True

    @staticmethod
    def _cache_argument(body) -> str:
        return _cache_argument_of(type(body))

    def _prefix_layers(self, body, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values (batch 1) of the shared prefix ``ids`` per layer, computed once by
        the frozen LLM and kept for the newest prefix (one per split and device)."""
        key = (tuple(ids.tolist()), ids.device, self.backbone.dtype, torch.is_autocast_enabled(ids.device.type))
        store = self.__dict__.setdefault("_prefix_kv", {})
        if key not in store:
            from dep_lightning.models.decoding import cache_layers

            with torch.no_grad():
                out = body(input_ids=ids[None], use_cache=True)
            store.clear()
            store[key] = cache_layers(getattr(out, "cache", None) or getattr(out, "past_key_values", None))
        return store[key]

    def _prefix_cache(self, body, ids: torch.Tensor, embeds: torch.Tensor):
        """The shared prefix's cache expanded to the batch of ``embeds`` (training)."""
        from transformers import DynamicCache

        batch = embeds.shape[0]
        cache = DynamicCache()
        for index, (k, v) in enumerate(self._prefix_layers(body, ids)):
            cache.update(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:]), index)
        return cache

    def log_val_nll(self, loss_gen: torch.Tensor, batch: Batch) -> None:
        """``val/nll``: NLL per target token over the whole validation split.

        ``loss_gen`` is the batch's mean over its target tokens; logged with the token count
        as batch size, Lightning's epoch mean weights batches by their tokens, which gives
        the split's per-token mean. A cheap checkpoint criterion (``monitor: val/nll``,
        ``mode: min``) next to generation-based ``val/meteor``."""
        tokens = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
        if tokens:
            self.log("val/nll", loss_gen, batch_size=tokens, sync_dist=True)

    # -- likelihood scoring (dep-lightning score) -----------------------------------------
    #: Set by ``Trainer.score``: the condition of each test dataloader; ``None`` = generate.
    scoring_conditions: tuple[str, ...] | None = None

    @torch.no_grad()
    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL (nats) and target-token count of each sample's reference, (B,) each."""
        embeds, _ = self.input_embeddings(batch.input_ids, batch.slots)
        return self.lm_nll(embeds, batch.attention_mask, batch.labels, batch.input_ids, batch.prefix_length)

    #: Set by ``Trainer.score`` for one scoring run: inputs digest -> (nll, tokens) of the
    #: batches scored so far; ``None`` outside scoring.
    scored_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    #: Slot inputs (``SLOT_INPUTS``) the method's likelihood does not depend on.
    score_ignores: frozenset[str] = frozenset()
    #: Set by ``ScoreWriter`` when runs share a folder of scores (``scoring.ScoreWriter``):
    #: inputs digest -> (nll, tokens) of batches whose likelihood is the frozen backbone's alone.
    shared_scores: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def backbone_only(self, batch: Batch) -> bool:
        """Whether the batch's likelihood is the frozen backbone's alone (no weight or rule of the
        method's own reaches it), so that any run with the same backbone scores it the same.

        True for this class's :meth:`score_batch` over its :meth:`input_embeddings` (the
        backbone's token embeddings) without trainable parameters; a subclass that changes
        either says itself when its own parts are not used (DEP: a batch without slots), and is
        never shared once a further subclass changes them again (:meth:`scores_as`)."""
        return self.scores_as(GenerativeModule) and not any(p.requires_grad for p in self.parameters())

    def scores_as(self, owner: type) -> bool:
        """Whether this object's likelihood is computed as ``owner``'s: this class's
        :meth:`score_batch` over ``owner``'s :meth:`input_embeddings`, neither overridden below
        (a subclass with its own rule is then never taken for the backbone alone)."""
        cls = type(self)
        return cls.score_batch is GenerativeModule.score_batch and cls.input_embeddings is owner.input_embeddings

    def score_rows(self, batch: Batch, condition: str) -> list[dict[str, Any]]:
        """``scores/test.jsonl`` rows of one teacher-forced batch (docs/runs.md).

        A batch whose inputs are identical to a batch of an earlier condition (every tensor the
        model reads, equal bit for bit; slot inputs in ``score_ignores`` left out) is not run
        again: its scores are those of the earlier batch. Where a condition changes nothing a
        method sees (Non-Perso's prompt has no history; the no-user control without text or
        metadata takes no user input under ``swap``), this scores it once. A batch the frozen
        backbone alone scores (:meth:`backbone_only`: DEP's under ``none``) is looked up in the
        scores runs share (``shared_scores``), when there are any. Batches with sample
        contexts (PAG, DPL: the stages read the reviews themselves) are looked up by their
        final inputs in their own ``score_batch``.
        """
        scoring = self.scored_inputs is not None and batch.context is None
        key = inputs_digest(batch, self.score_ignores) if scoring else None
        shared = self.shared_scores if scoring and self.backbone_only(batch) else None
        if key is not None and key in self.scored_inputs:
            nll, tokens = self.scored_inputs[key]
        # Shared among methods: every input, whatever this method ignores.
        elif shared is not None and (shared_key := inputs_digest(batch)) in shared:
            nll, tokens = shared[shared_key]
        else:
            nll, tokens = self.score_batch(batch)
            if key is not None:
                self.scored_inputs[key] = (nll, tokens)
            if shared is not None:
                shared[shared_key] = (nll, tokens)
        return [{"sample_id": batch.sample_id[i], "user_id": batch.user_id[i],
                 "category": batch.category[i], "condition": condition,
                 "nll": float(nll[i]), "tokens": int(tokens[i])} for i in range(len(batch.sample_id))]

    # -- steps ----------------------------------------------------------------------------
    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        if self.scoring_conditions is not None:
            return self.score_rows(batch, self.scoring_conditions[dataloader_idx])
        return self.predict_step(batch, batch_idx)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        return prediction_rows(batch, self.generate_outputs(batch.prompt, key=batch.sample_id[0]))

    # -- checkpoints: trainable weights only ----------------------------------------------
    def trainable_state_keys(self) -> set[str]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return names | {n for n, _ in self.named_buffers() if not n.startswith("backbone.")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" not in checkpoint:
            # A DeepSpeed strategy's engine has loaded the weights from its own files and hands
            # Lightning only the rest (strict_loading is off: the frozen backbone is not saved).
            return
        missing = sorted(self.trainable_state_keys() - set(checkpoint["state_dict"]))
        if missing:
            raise KeyError(f"checkpoint lacks trainable weights {missing[:5]} (of {len(missing)}): "
                           f"was it saved with another method, refinement or size?")


@register(MethodSpec("non_perso", "Non-Perso", order=10), MethodSpec("rag", "RAG", order=20))
class PromptingModule(GenerativeModule):
    """An untrained method: the frozen LLM prompted by the DataModule's text prompt.

    ``non_perso`` uses a prompt without history (``data.prompt.history: false``); ``rag``
    shows the K retrieved reviews as text (``embeddings: none``). Nothing is trained: run
    it with ``test`` (or ``fit`` with ``trainer.max_epochs: 0`` and ``test_after_fit``).

    Args:
        method: name recorded in the run's manifest (``non_perso`` or ``rag``).
        embedding_dim: unused (accepted so every method takes the same linked arguments).
    """

    def __init__(self, method: str = "rag", backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 embedding_dim: int = 384, generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 backbone_options: BackboneOptions = BackboneOptions()):
        super().__init__(backbone, backbone_dtype, generation, seed, backbone_options)
        self.method = method
        self.save_plain_hyperparameters()

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        raise RuntimeError(f"method {self.method!r} has nothing to train: run `dep-lightning test`, or fit with "
                           f"trainer.max_epochs: 0")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        embeds = self.backbone.get_input_embeddings()(batch.input_ids)
        loss = self.lm_loss(embeds, batch.attention_mask, batch.labels, batch.input_ids, batch.prefix_length)
        self.log("val/loss", loss, batch_size=batch.input_ids.shape[0], sync_dist=True)
        self.log_val_nll(loss, batch)

    def configure_optimizers(self):
        return None
