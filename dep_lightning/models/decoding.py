"""The framework's own decoder (``backbone_options.generation_backend: native``).

Three things make it faster than the backbone's ``generate`` on a left-padded batch, without
changing what is computed beyond float rounding (``tests/models/test_decoding.py``):

* **per-row prefill** — each prompt runs through the LLM at its own length, as it would
  alone; a padded batch spends the longest prompt's compute on every row, and on CPUs the
  padded batch is slower still than the rows one by one (docs/performance.md);
* **the split's shared prefix** (``PromptBatch.prefix_length``: the leading tokens every
  prompt of the split shares, e.g. the system prompt) is read from the KV cache that
  training builds once (``GenerativeModule._prefix_layers``) instead of being run again
  for every prompt;
* **one preallocated KV cache** holds every row, left-aligned to the longest prompt and
  sized for ``max_new_tokens``: a decoding step writes its keys and values in place
  instead of concatenating a new copy of the whole cache per layer, and rows that have
  produced a stop token leave the batch.

Decoding is greedy or samples with temperature and top-p; each row draws from its own
generator, seeded by the caller, so a row's output does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache


class PreallocatedCache(DynamicCache):
    """A KV cache over fixed buffers (B, heads, capacity, head dim) per layer, written in place.

    ``update`` stores a step's keys and values after the ones already held and returns views
    of the filled part. Every row holds the same number of positions (padding is masked);
    ``select`` keeps some rows only.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int):
        super().__init__()
        self.buffers = list(zip(keys, values))
        self.length = length

    @property
    def capacity(self) -> int:
        return self.buffers[0][0].shape[2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.buffers[layer_idx]
        n = key_states.shape[2]
        end = self.length + n
        if end > self.capacity:
            raise RuntimeError(f"PreallocatedCache: {end} positions do not fit its {self.capacity}")
        keys[:, :, self.length:end] = key_states
        values[:, :, self.length:end] = value_states
        if layer_idx == len(self.buffers) - 1:  # the last layer closes the step
            self.length = end
        return keys[:, :, :end], values[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def select(self, rows: torch.Tensor) -> None:
        self.buffers = [(k[rows], v[rows]) for k, v in self.buffers]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of :func:`decode` (``None`` there means greedy)."""

    temperature: float
    top_p: float


def next_tokens(logits: torch.Tensor, sampling: Sampling | None,
                generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of ``logits`` (R, V): the argmax, or a draw from the row's generator
    after temperature and top-p (the smallest set of most likely tokens whose probability
    reaches ``top_p``; the most likely token always stays)."""
    if sampling is None:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        ordered = ordered.masked_fill(before >= sampling.top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = logits.softmax(dim=-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])


def decode(model, embeds: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           stop_ids: Sequence[int], sampling: Sampling | None = None,
           generators: Sequence[torch.Generator] = (), input_ids: torch.Tensor | None = None,
           prefix_length: int = 0, scores: list[list[torch.Tensor]] | None = None) -> list[list[int]]:
    """New token ids of each row of a left-padded prompt batch, up to and including its first
    stop token, or ``max_new_tokens`` of them.

    ``model`` is a :class:`~dep_lightning.models.base.GenerativeModule` whose backbone exposes
    its body and LM head; ``embeds`` (B, P, E) are the prompts' input embeddings (soft prompts
    spliced in) and ``attention_mask`` (B, P) marks the real tokens. With ``input_ids`` and
    ``prefix_length`` > 0, the first ``prefix_length`` real tokens of every row (which must be
    the same plain tokens in every row) come from the shared-prefix cache. With ``scores`` (a
    list), it receives one list per row of the float32 logits (V,) each of its tokens was chosen
    from.
    """
    body, head = model._body_and_head()
    if body is None:
        raise ValueError("backbone_options.generation_backend: native needs a backbone with a plain LM head "
                         "(`model` and `lm_head`, no logit soft-capping); use hf")
    batch, width = attention_mask.shape
    if sampling is not None and len(generators) != batch:
        raise ValueError(f"decode: {len(generators)} generators for {batch} rows")
    lengths = attention_mask.sum(dim=1).tolist()
    dtype, device = model.backbone.dtype, embeds.device
    embeds = embeds.to(dtype)
    cache_key = model._cache_argument(body)
    prefix = _shared_prefix(model, body, input_ids, attention_mask, prefix_length)
    p = 0 if prefix is None else prefix[0][0].shape[2]

    # Prefill, one row at a time at its own length; its keys and values go to the right end
    # of the row's first ``width`` positions, as the padded batch had them.
    buffers = None
    logits = []
    for row, length in enumerate(lengths):
        real = embeds[row:row + 1, width - length:]
        past = DynamicCache()
        for index, (k, v) in enumerate(prefix or ()):
            past.update(k, v, index)
        positions_row = torch.arange(p, length, device=device)[None]
        hidden = body(inputs_embeds=real[:, p:], use_cache=True, position_ids=positions_row,
                      **{cache_key: past}).last_hidden_state
        logits.append(head(hidden[:, -1]).float())
        layers = cache_layers(past)
        if buffers is None:
            buffers = [(k.new_zeros(batch, k.shape[1], width + max_new_tokens, k.shape[3]),
                        v.new_zeros(batch, v.shape[1], width + max_new_tokens, v.shape[3])) for k, v in layers]
        for (k_buf, v_buf), (k, v) in zip(buffers, layers):
            k_buf[row, :, width - length:width] = k[0]
            v_buf[row, :, width - length:width] = v[0]
    cache = PreallocatedCache([k for k, _ in buffers], [v for _, v in buffers], width)

    # Additive mask over every position of the cache: padding is never attended to.
    visible = torch.zeros(batch, width + max_new_tokens, dtype=torch.bool, device=device)
    visible[:, :width] = attention_mask.bool()
    visible[:, width:] = True
    blocked = torch.finfo(dtype).min
    positions = torch.tensor(lengths, device=device)
    alive = torch.arange(batch, device=device)  # original row of each row still decoding
    gens = list(generators)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    step_logits = torch.cat(logits)
    embed_tokens = model.backbone.get_input_embeddings()
    for step in range(max_new_tokens):
        tokens = next_tokens(step_logits, sampling, gens)
        for row, token in zip(alive.tolist(), tokens.tolist()):
            outputs[row].append(token)
        if scores is not None:
            if not scores:
                scores.extend([] for _ in range(batch))
            for row, values in zip(alive.tolist(), step_logits):
                scores[row].append(values)
        if step == max_new_tokens - 1:
            break
        going = ~torch.isin(tokens, stops)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero(as_tuple=True)[0]
            alive, tokens, positions = alive[keep], tokens[keep], positions[keep]
            gens = [gens[i] for i in keep.tolist()] if gens else gens
            visible = visible[keep]
            cache.select(keep)
        end = width + step + 1
        mask = torch.zeros(len(alive), 1, 1, end, dtype=dtype, device=device)
        mask.masked_fill_(~visible[:, None, None, :end], blocked)
        hidden = body(inputs_embeds=embed_tokens(tokens[:, None]).to(dtype), attention_mask=mask,
                      position_ids=(positions + step)[:, None], use_cache=True,
                      **{cache_key: cache}).last_hidden_state
        step_logits = head(hidden[:, -1]).float()
    return outputs


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a Hugging Face cache, any transformers version."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache)


def _shared_prefix(model, body, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                   prefix_length: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The shared prefix's (keys, values) per layer, batch 1, or None when there is none to use."""
    if input_ids is None or prefix_length <= 0:
        return None
    lengths = attention_mask.sum(dim=1)
    if int(lengths.min()) <= prefix_length:  # every row needs at least one token of its own
        return None
    width = attention_mask.shape[1]
    starts = (width - lengths).tolist()
    rows = torch.stack([input_ids[i, s:s + prefix_length] for i, s in enumerate(starts)])
    if not bool((rows == rows[:1]).all()):
        return None
    return model._prefix_layers(body, rows[0])
