"""Where the time of a training step and of generation goes: torch.profiler, top operators by self time.

    python bench/profile_step.py                 # DEP step without text, K=4, batch 1; generation of 8 prompts
    python bench/profile_step.py --with-text --steps 2 --new-tokens 16

Real SmolLM2-135M-Instruct in the dtype ``backbone_dtype: auto`` picks on this machine,
DEP's adapters (untrained: the cost does not depend on their values), the real Musical
Instruments prompts (``bench/_common.py``; slot vectors from the tiny sentence model).

1. **Training step**, the product's own path: ``DEPModule.losses`` (LM head at the target
   tokens only, the shared prompt prefix from a KV cache), backward, AdamW. After one
   warm-up step, ``--steps`` steps run under the profiler. Printed: the operators by self
   CPU time, and the step's counted FLOPs (``FlopCounterMode`` for the matmuls; causal
   attention, which the counter does not see inside fused kernels on CPU, added as
   ``2·T²·d`` per layer forward and twice that backward) per second, against the matmul
   peak of the same dtype measured here.
2. **Generation**, ``--gen-batch`` test prompts left-padded into one batch, greedy, with the
   KV cache: the prefill (one forward pass over the prompts) and ``--new-tokens`` decoding
   steps are profiled separately, each with its own top operators and its seconds.
3. **Native decoding** (``models/decoding.py``, what ``generation_backend: auto`` runs on
   CPU), the same prompts: the decoder runs once for 1 token (the per-row prefill and one
   step) and once for ``--new-tokens``, each under the profiler; the decoding steps are the
   difference, per operator.

The tables name what to speed up; docs/performance.md keeps them per CPU kind with what
each finding led to.
"""

from __future__ import annotations

import argparse

import torch
from _common import Timer, load_note, machine_line, matmul_peak, musical_instruments
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from dep_lightning.models.generation import left_padded_positions


def top_table(prof, top: int) -> str:
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)


def attention_flops(config, tokens: int) -> float:
    """Causal attention, forward + backward, every layer, one sequence of ``tokens``."""
    d = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    return 3 * (2 * tokens * tokens * d) * config.num_hidden_layers


def train_step(model, optimizer, batch) -> None:
    loss = model.losses(batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def profile_training(model, batch, steps: int, top: int, peak: float) -> None:
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    train_step(model, optimizer, batch)  # warm-up
    with FlopCounterMode(display=False) as counter:
        train_step(model, optimizer, batch)
    tokens = int(batch.attention_mask.sum())
    flops = counter.get_total_flops() + attention_flops(model.backbone.config, tokens)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with Timer() as t:
            for _ in range(steps):
                train_step(model, optimizer, batch)
    per_step = t.seconds / steps
    targets = int((batch.labels != -100).sum())
    print(f"\n## Training step: {tokens} tokens ({targets} target, shared prefix {batch.prefix_length}), "
          f"{steps} profiled steps, {per_step:.2f} s per step (under the profiler)")
    print(f"counted FLOPs per step {flops / 1e9:.1f} G -> {flops / per_step / 1e9:.1f} GFLOP/s = "
          f"{flops / per_step / peak:.0%} of the matmul peak ({peak / 1e9:.1f} GFLOP/s)")
    print(top_table(prof, top))


@torch.no_grad()
def profile_generation(model, prompt, new_tokens: int, top: int) -> None:
    embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
    mask = prompt.attention_mask
    positions = left_padded_positions(mask)  # as GenerativeModule.generate_outputs passes them
    with profile(activities=[ProfilerActivity.CPU]) as prefill_prof:
        with Timer() as prefill:
            out = model.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                 use_cache=True, logits_to_keep=1)
    cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    with profile(activities=[ProfilerActivity.CPU]) as decode_prof:
        with Timer() as decode:
            for _ in range(new_tokens - 1):
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                positions = positions[:, -1:] + 1
                out = model.backbone(input_ids=token, attention_mask=mask, position_ids=positions,
                                     past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    rows, width = prompt.input_ids.shape
    real = int(prompt.attention_mask.sum())
    print(f"\n## Generation: {rows} prompts left-padded to {width} tokens ({real} real, "
          f"{1 - real / (rows * width):.0%} padding), greedy, {new_tokens} new tokens")
    print(f"prefill {prefill.seconds:.2f} s ({real / prefill.seconds:.0f} real prompt tokens/s); "
          f"decoding {new_tokens - 1} steps {decode.seconds:.2f} s "
          f"({decode.seconds / max(1, new_tokens - 1) * 1e3:.0f} ms per step, "
          f"{rows * (new_tokens - 1) / decode.seconds:.1f} new tokens/s)")
    print("\n### prefill, top operators by self time")
    print(top_table(prefill_prof, top))
    print("\n### decoding, top operators by self time")
    print(top_table(decode_prof, top))


@torch.no_grad()
def profile_native_generation(model, prompt, new_tokens: int, top: int) -> None:
    from dep_lightning.models.decoding import decode

    embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
    runs = {}
    for n in (1, new_tokens):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with Timer() as t:
                decode(model, embeds, prompt.attention_mask, max_new_tokens=n, stop_ids=(),
                       input_ids=prompt.input_ids, prefix_length=prompt.prefix_length)
        runs[n] = (t.seconds, {e.key: e.self_cpu_time_total for e in prof.key_averages()})
    (first, first_ops), (total, total_ops) = runs[1], runs[new_tokens]
    steps = new_tokens - 1
    rows = prompt.input_ids.shape[0]
    print(f"\n## Native decoding: {rows} prompts prefilled one by one after the shared prefix "
          f"({prompt.prefix_length} tokens), greedy, {new_tokens} new tokens")
    print(f"prefill + 1 step {first:.2f} s; decoding {steps} steps {total - first:.2f} s "
          f"({(total - first) / max(1, steps) * 1e3:.0f} ms per step, "
          f"{rows * steps / (total - first):.1f} new tokens/s)")
    diff = sorted(((total_ops[k] - first_ops.get(k, 0.0), k) for k in total_ops), reverse=True)
    whole = sum(max(0.0, d) for d, _ in diff)
    print("\n### native decoding steps, top operators by self time (the 1-token run subtracted)")
    print("| operator | self ms per step | share |\n|---|---:|---:|")
    for d, key in diff[:top]:
        print(f"| {key} | {d / 1e3 / max(1, steps):.1f} | {d / whole:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--with-text", action="store_true", help="show the history reviews' text")
    parser.add_argument("--steps", type=int, default=3, help="profiled training steps")
    parser.add_argument("--gen-batch", type=int, default=8, help="prompts generated in one batch")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--top", type=int, default=15, help="operators shown per table")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dep_lightning.data.prompt import PromptConfig
    from dep_lightning.models.backbone import resolve_dtype
    from dep_lightning.models.dep_module import DEPModule

    print(machine_line())
    print(load_note())
    dtype = resolve_dtype("auto")
    peak = max(matmul_peak(1024, dtype, repeats=5).values())
    dm = musical_instruments(k=args.k, eval_batch_size=args.gen_batch, limit_test=args.gen_batch,
                             prompt=PromptConfig(with_text=args.with_text))
    dm.setup("test")
    model = DEPModule(backbone="smollm2-135m-instruct", backbone_dtype="auto", embedding_dim=dm.embedding_dim)
    model.train()
    model.backbone.eval()
    batch = next(iter(dm.train_dataloader()))
    profile_training(model, batch, args.steps, args.top, peak)
    model.eval()
    prompt = next(iter(dm.test_dataloader())).prompt
    profile_generation(model, prompt, args.new_tokens, args.top)
    profile_native_generation(model, prompt, args.new_tokens, args.top)


if __name__ == "__main__":
    main()
