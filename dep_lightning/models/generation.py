"""Generation, shared by every generating method: decoding settings, the three decoders
(the backbone's ``generate``, the framework's own in ``models/decoding.py``, vLLM in
``models/vllm_backend.py``), output cut at the first stop token, and prediction rows.

:class:`GenerationMixin` is mixed into :class:`~dep_lightning.models.base.GenerativeModule`;
it reads the module's ``backbone``, ``tokenizer``, ``end_of_turn``, ``generation``, ``seed``,
``backbone_options`` and ``input_embeddings`` and the body / head split of
``_body_and_head``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from dep_lightning.data.types import Batch, PromptBatch

ROW_FIELDS = ("sample_id", "user_id", "item_id", "category", "reference", "history")


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


@dataclass(frozen=True)
class Generated:
    """One generated output: the text up to the first stop token and its token count."""

    text: str
    tokens: int
    hit_limit: bool


def stable_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little") % (2**63)


def as_generation_config(generation: GenerationConfig | dict) -> GenerationConfig:
    return GenerationConfig(**generation) if isinstance(generation, dict) else generation


def prediction_rows(batch: Batch, outputs: list[Generated]) -> list[dict[str, Any]]:
    """The ``predictions/test.jsonl`` rows of one batch (see docs/runs.md)."""
    rows = []
    for i, out in enumerate(outputs):
        row = {f: getattr(batch, f)[i] for f in ROW_FIELDS}
        row.update(prediction=out.text, generated_tokens=out.tokens, hit_limit=out.hit_limit)
        rows.append(row)
    return rows


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, counted from each row's first real token.

    As in training (right-padded) and as if each row were alone: transformers' ``generate``
    numbers a left-padded ``inputs_embeds`` batch from 0 at the padding, so without these a
    row's output would depend on how much padding its batch gave it (RoPE is shift-invariant
    only up to rounding, which a sharp attention amplifies; tests/models/test_vllm_backend.py).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class GenerationMixin:
    """Decoding for a module with a frozen causal LM (see the module docstring)."""

    @property
    def stop_ids(self) -> list[int]:
        return sorted({self.end_of_turn, self.tokenizer.eos_token_id} - {None})

    @torch.no_grad()
    def generate_outputs(self, prompt: PromptBatch, key: str = "",
                         generation: GenerationConfig | None = None) -> list[Generated]:
        """Generate for a left-padded prompt batch; the new text per row, cut at the first stop token."""
        g = generation or self.generation
        embeds, _ = self.input_embeddings(prompt.input_ids, prompt.slots)
        stop = self.stop_ids
        kwargs = dict(max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stop)
        if g.do_sample:
            kwargs.update(temperature=g.temperature, top_p=g.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[embeds.device] if embeds.is_cuda else []):
            # Sampling depends on the decoding seed, the run's seed and the batch's first sample.
            torch.manual_seed(stable_seed(g.seed, key if self.seed == 0 else f"{self.seed}/{key}"))
            # With inputs_embeds only, generate returns just the new tokens.
            backend = self.generation_backend(embeds.device)
            if backend == "vllm":
                return self._vllm_outputs(embeds, prompt, g, key)
            if backend == "native":
                return self._native_outputs(embeds, prompt, g, key)
            mask = prompt.attention_mask
            out = self.backbone.generate(inputs_embeds=embeds.to(self.backbone.dtype), attention_mask=mask,
                                         position_ids=left_padded_positions(mask), **kwargs)
        return [self._cut(row.tolist(), g.max_new_tokens) for row in out]

    def _vllm_outputs(self, embeds: torch.Tensor, prompt: PromptBatch, g: GenerationConfig,
                      key: str) -> list[Generated]:
        """The same prompt embeddings decoded by vLLM (``models/vllm_backend.py``); each row
        seeded from the batch's seed and its position, so outputs do not depend on batching."""
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            raise ValueError("backbone_options.generation_backend: vllm runs in one process; test with "
                             "trainer.devices 1 (vLLM batches the whole split itself)")
        generator = self.__dict__.get("_vllm")
        if generator is None:
            from dep_lightning.models.vllm_backend import VLLMGenerator

            source = getattr(self.backbone, "dep_source", None)
            if source is None:
                raise ValueError("backbone_options.generation_backend: vllm needs a backbone read from a model "
                                 "folder (not the tiny test model)")
            generator = self.__dict__["_vllm"] = VLLMGenerator(source, self.backbone.dtype,
                                                               self.backbone_options.vllm_gpu_memory)
        seeds = self.row_seeds(g, key, embeds.shape[0])
        rows = generator.generate(embeds, prompt.attention_mask, seeds, max_new_tokens=g.max_new_tokens,
                                  do_sample=g.do_sample, temperature=g.temperature, top_p=g.top_p,
                                  stop_ids=self.stop_ids)
        return [self._cut(row, g.max_new_tokens) for row in rows]

    def generation_backend(self, device: torch.device | str | None = None) -> str:
        """The decoder ``generate_outputs`` uses (``BackboneOptions.generation_backend``, with
        ``auto`` resolved): ``native`` is measured faster on CPU (docs/performance.md); on GPUs,
        where a padded batch's prefill costs little, the backbone's ``generate`` stays."""
        backend = self.backbone_options.generation_backend
        if backend != "auto":
            return backend
        device = torch.device(device if device is not None else self.device)
        return "native" if device.type == "cpu" and self._body_and_head()[0] is not None else "hf"

    def row_seeds(self, g: GenerationConfig, key: str, rows: int) -> list[int]:
        """One sampling seed per row, from the decoding seed, the run's seed, the batch's key
        and the row's position (the vLLM and native decoders)."""
        base = key if self.seed == 0 else f"{self.seed}/{key}"
        return [stable_seed(g.seed, f"{base}/{i}") % (2**31) for i in range(rows)]

    def _native_outputs(self, embeds: torch.Tensor, prompt: PromptBatch, g: GenerationConfig,
                        key: str) -> list[Generated]:
        """The framework's own decoder (``models/decoding.py``)."""
        from dep_lightning.models.decoding import Sampling, decode

        sampling, generators = None, []
        if g.do_sample:
            sampling = Sampling(temperature=g.temperature, top_p=g.top_p)
            for seed in self.row_seeds(g, key, embeds.shape[0]):
                generators.append(torch.Generator(device=embeds.device).manual_seed(seed))
        rows = decode(self, embeds, prompt.attention_mask, max_new_tokens=g.max_new_tokens, stop_ids=self.stop_ids,
                      sampling=sampling, generators=generators, input_ids=prompt.input_ids,
                      prefix_length=prompt.prefix_length)
        return [self._cut(row, g.max_new_tokens) for row in rows]

    def _cut(self, ids: list[int], limit: int) -> Generated:
        stops = set(self.stop_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), None)
        kept = ids if end is None else ids[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Generated(text, len(kept), hit_limit=end is None and len(ids) >= limit)

    def generate(self, prompt: PromptBatch, key: str = "", generation: GenerationConfig | None = None) -> list[str]:
        """Generated texts only (see :meth:`generate_outputs`)."""
        return [g.text for g in self.generate_outputs(prompt, key, generation)]
