"""The backbone's achieved forward+backward FLOP/s against this machine's measured matmul peak.

    python bench/bench_flops.py                          # fp32 at 512 and 1024 tokens, bf16 at 128
    python bench/bench_flops.py --lengths 1024 2048 --bf16-length 256

Peak: the best of ``--matmul-repeats`` square products through ``torch.mm`` and ``F.linear``
(oneDNN), fp32 and bf16, on all of torch's threads; the faster of the two is the peak.
Backbone: SmolLM2-135M-Instruct, frozen, batch 1,
input embeddings that require a gradient (as soft prompts make them), forward + loss +
backward through every layer to the input (no weight gradients: the LLM is frozen) —
what a DEP training step asks of the LLM. FLOPs are counted, not estimated: torch's
FlopCounterMode counts every matmul of one step (projections, MLP, LM head); attention
(fused SDPA kernels, which the counter does not see on CPU) adds ``2·T²·d`` per layer
forward and twice that backward (causal: half of the ``T×T`` scores). bf16 runs under
``torch.autocast`` at a shorter length: without native bf16 units it is much slower.
"""

from __future__ import annotations

import argparse

import torch
from _common import Timer, machine_line, matmul_peak, table
from torch.utils.flop_counter import FlopCounterMode


def step(model, embeds: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> None:
    x = embeds.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = model(inputs_embeds=x, labels=labels).loss
    loss.backward()


def attention_flops(config, length: int) -> float:
    """Causal attention scores and weighted sums, forward + backward, all layers (batch 1)."""
    d = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    forward = 2 * length * length * d  # QK^T and PV over the causal half: 2 * (2 * T^2 * d / 2)
    return 3 * forward * config.num_hidden_layers


def backbone_rate(model, length: int, dtype: torch.dtype, repeats: int) -> tuple[float, float, float]:
    """(FLOPs per step, best seconds per step, attention share of the FLOPs)."""
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=generator)
    embeds = model.get_input_embeddings()(ids)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # targets in the second half, as in DEP samples
    with FlopCounterMode(display=False) as counter:
        step(model, embeds, labels, dtype)
    attention = attention_flops(model.config, length)
    flops = counter.get_total_flops() + attention
    step(model, embeds, labels, dtype)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            step(model, embeds, labels, dtype)
        best = min(best, t.seconds)
    return flops, best, attention / flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024], help="fp32 sequence lengths")
    parser.add_argument("--bf16-length", type=int, default=128, help="sequence length of the bf16 step (0: skip)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="fp32 peak: n x n x n products")
    parser.add_argument("--bf16-matmul-size", type=int, default=512,
                        help="bf16 peak (small: without bf16 units a 2048 product takes minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed backbone steps; the best counts")
    parser.add_argument("--matmul-repeats", type=int, default=20, help="timed fp32 products (bf16: a fifth)")
    args = parser.parse_args()

    from dep_lightning.models.backbone import load_backbone

    print(machine_line(peak=False))  # the peaks of both dtypes are measured below
    sizes = {"fp32": args.matmul_size, "bf16": args.bf16_matmul_size}
    measured = {"fp32": matmul_peak(sizes["fp32"], torch.float32, args.matmul_repeats),
                "bf16": matmul_peak(sizes["bf16"], torch.bfloat16, max(1, args.matmul_repeats // 5))}
    peak = {name: max(rates.values()) for name, rates in measured.items()}
    model, _ = load_backbone("smollm2-135m-instruct", dtype="float32")

    rows = [[f"matmul {sizes[name]}^3, {how}", name, "", "", f"{rate / 1e9:.1f}",
             "peak" if rate == peak[name] else f"{rate / peak[name]:.2f} of peak"]
            for name, rates in measured.items() for how, rate in rates.items()]
    runs = [(n, torch.float32, "fp32") for n in args.lengths]
    if args.bf16_length:
        runs += [(args.bf16_length, torch.float32, "fp32"), (args.bf16_length, torch.bfloat16, "bf16")]
    seen = set()
    for length, dtype, name in runs:
        if (length, name) in seen:
            continue
        seen.add((length, name))
        flops, seconds, attention = backbone_rate(model, length, dtype, args.repeats)
        rate = flops / seconds
        rows.append([f"SmolLM2 fwd+bwd, {length} tokens", name, f"{flops / 1e9:.0f} ({attention:.0%} attention)",
                     f"{seconds:.2f}", f"{rate / 1e9:.1f}", f"{rate / peak[name]:.2f} of {name} peak"])
    print()
    print(table(["what", "dtype", "GFLOP per step", "s per step", "GFLOP/s", "fraction of peak"], rows))


if __name__ == "__main__":
    main()
