"""Test-time generation with batches cut in file order against batches of similar length.

    python bench/bench_test_order.py                      # 32 test prompts, batches of 8, 16 new tokens
    python bench/bench_test_order.py --samples 48 --new-tokens 32

The DataModule's ``test_order: length`` (default) against ``test_order: file``: the same
``--samples`` Musical Instruments test prompts, batched by the real test loaders, through
real SmolLM2-135M-Instruct (fp32) with DEP's soft prompts spliced in (untrained adapters;
speed does not depend on their values). Every row generates exactly ``--new-tokens``
tokens (stop tokens ignored) so both variants produce the same tokens' worth of work
apart from padding; greedy decoding, KV cache on. The variants alternate for
``--repeats`` rounds and the best round counts. Printed: padded prompt tokens (the share
of positions that are padding) and seconds, with the ratio length / file.
"""

from __future__ import annotations

import argparse

import torch
from _common import DATA, Timer, load_note, load_smollm2, machine_line, musical_instruments, table
from bench_generation import generate


def batches(dm, order: str) -> list[dict]:
    dm.test_order = order
    return [batch.prompt for batch in dm.test_dataloader()]


def padding(prompts: list[dict]) -> tuple[int, int]:
    positions = sum(p.attention_mask.numel() for p in prompts)
    real = sum(int(p.attention_mask.sum()) for p in prompts)
    return positions, positions - real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds; the best counts")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    print(machine_line())

    dm = musical_instruments(k=args.k, eval_batch_size=args.batch, data=args.data, limit_test=args.samples)
    dm.setup("test")
    variants = {order: batches(dm, order) for order in ("file", "length")}
    model = load_smollm2(dm.embedding_dim).eval()
    lengths = [e.prompt_length for e in dm.examples["test"]]
    print(f"{len(lengths)} prompts of {min(lengths)}-{max(lengths)} tokens in batches of {args.batch}, "
          f"{args.new_tokens} new tokens each; {load_note()}")

    times = {order: [] for order in variants}
    with torch.no_grad():
        generate(model, variants["file"][0], 2)  # warm-up
        for _ in range(args.repeats):
            for order, prompts in variants.items():
                with Timer() as t:
                    outs = [generate(model, p, args.new_tokens) for p in prompts]
                times[order].append(t.seconds)
                assert sum(o.shape[0] for o in outs) == len(lengths)
    best = {order: min(v) for order, v in times.items()}
    rows = []
    for order, prompts in variants.items():
        positions, padded = padding(prompts)
        rows.append([order, len(prompts), positions, f"{padded / positions:.1%}", f"{best[order]:.1f}",
                     f"{best['file'] / best[order]:.2f}"])
    print("rounds: " + "; ".join(f"{o}: " + ", ".join(f"{s:.1f}" for s in v) for o, v in times.items()))
    print()
    print(table(["test_order", "batches", "prompt positions", "padding", "best s", "speed-up vs file"], rows))


if __name__ == "__main__":
    main()
