"""Generation through vLLM, fed with the same spliced prompt embeddings as the HF path.

``backbone_options.generation_backend: vllm`` (extra ``vllm``: ``pip install -e '.[vllm]'``,
a CUDA machine) hands each prompt to ``vllm.LLM.generate`` as ``{"prompt_embeds": (n, hidden)}``
— the rows :meth:`GenerativeModule.input_embeddings` builds (token embeddings with the soft
prompts spliced in), padding removed — so vLLM decodes exactly what the HF path decodes,
with paged attention and continuous batching instead of a padded batch. vLLM takes prompt
embeddings upstream (``LLM(enable_prompt_embeds=True)``, V1 engine); no fork is needed.

Training, validation loss and likelihood scoring stay on the HF backbone; only decoding
moves. The engine loads the same weights (the backbone's local folder, or the converted
cache folder of the packaged GGUF) in the backbone's dtype, next to the HF copy, with
``gpu_memory_utilization = backbone_options.vllm_gpu_memory``. Greedy outputs agree with
the HF path up to kernel rounding (``scripts/gpu_check.sh`` compares them on one
checkpoint); sampled outputs use vLLM's per-request seeds, so they are other samples than
HF's from the same seed. One process: a multi-process test run with this backend is refused.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["VLLMGenerator", "unpadded_prompt_embeds"]


def unpadded_prompt_embeds(embeds: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row of a padded (B, T, H) prompt batch without its padding positions, (n_i, H)."""
    if embeds.shape[:2] != attention_mask.shape:
        raise ValueError(f"embeds {tuple(embeds.shape)} and attention_mask {tuple(attention_mask.shape)} disagree")
    return [row[mask.bool()] for row, mask in zip(embeds, attention_mask)]


class VLLMGenerator:
    """A vLLM engine over the backbone's weights that decodes from prompt embeddings.

    ``engine`` replaces the ``vllm.LLM`` built on first use (anything with vLLM's
    ``generate(prompts, sampling_params)``); ``sampling`` replaces ``vllm.SamplingParams``.
    """

    def __init__(self, model_path: str, dtype: torch.dtype, gpu_memory: float = 0.4, max_model_len: int | None = None,
                 engine: Any = None, sampling: Callable[..., Any] | None = None):
        self.model_path, self.dtype, self.gpu_memory, self.max_model_len = model_path, dtype, gpu_memory, max_model_len
        self._engine, self._sampling = engine, sampling

    @property
    def engine(self):
        if self._engine is None:
            try:
                from vllm import LLM
            except ImportError as error:
                raise ImportError("backbone_options.generation_backend: vllm needs the vllm package "
                                  "(pip install -e '.[vllm]', on a CUDA machine)") from error
            self._engine = LLM(model=self.model_path, enable_prompt_embeds=True,
                               dtype=str(self.dtype).removeprefix("torch."), gpu_memory_utilization=self.gpu_memory,
                               max_model_len=self.max_model_len)
        return self._engine

    def sampling_params(self, *, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                        seed: int, stop_ids: Sequence[int]):
        """vLLM's sampling settings for one request (greedy = temperature 0)."""
        make = self._sampling
        if make is None:
            from vllm import SamplingParams as make
        settings = dict(max_tokens=max_new_tokens, stop_token_ids=list(stop_ids), seed=seed,
                        temperature=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0,
                        skip_special_tokens=True)
        return make(**settings)

    def requests(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """What the engine receives: one ``{"prompt_embeds"}`` per row, unpadded, on the CPU
        in the backbone's dtype (vLLM moves them to its own device)."""
        rows = unpadded_prompt_embeds(embeds.detach(), attention_mask)
        return [{"prompt_embeds": row.to("cpu", self.dtype)} for row in rows]

    def generate(self, embeds: torch.Tensor, attention_mask: torch.Tensor, seeds: Sequence[int],
                 **sampling: Any) -> list[list[int]]:
        """New token ids per row (with or without the stop token that ended it: the caller cuts
        at the first stop token either way)."""
        requests = self.requests(embeds, attention_mask)
        if len(seeds) != len(requests):
            raise ValueError(f"{len(seeds)} seeds for {len(requests)} prompts")
        params = [self.sampling_params(seed=seed, **sampling) for seed in seeds]
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]
