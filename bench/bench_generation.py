"""Batched generation: tokens/s with batch 8 against the same 8 prompts one at a time.

    python bench/bench_generation.py                      # 8 test prompts, 32 new tokens each
    python bench/bench_generation.py --batch 4 --new-tokens 64

Real SmolLM2-135M-Instruct (fp32) with DEP's soft prompts spliced in (untrained
adapters; the speed does not depend on their values), on the first ``--batch`` test
prompts of the Musical Instruments data, left-padded as the DataModule batches them for
generation. Every row generates exactly ``--new-tokens`` tokens (stop tokens are
ignored), so both variants produce the same number of tokens; greedy decoding, KV cache
on. Each variant also generates a single token (prefill + one step) through the same call,
so the table shows the decoding part (N tokens minus 1 token). The variants alternate
for ``--repeats`` rounds and the best round counts.
"""

from __future__ import annotations

import argparse

import torch
from _common import DATA, Timer, load_note, load_smollm2, machine_line, musical_instruments, table

from dep_lightning.models.base import left_padded_positions


def generate(model, prompt, new_tokens: int) -> torch.Tensor:
    """Exactly `new_tokens` greedy tokens (stop tokens ignored), positioned as the product generates."""
    embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
    return model.backbone.generate(inputs_embeds=embeds, attention_mask=prompt.attention_mask,
                                   position_ids=left_padded_positions(prompt.attention_mask),
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   temperature=None, top_p=None, top_k=None,
                                   pad_token_id=model.tokenizer.pad_token_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds; the best counts")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())

    dm = musical_instruments(k=args.k, eval_batch_size=args.batch, data=args.data, limit_test=args.batch)
    dm.setup("test")
    first = next(iter(dm.test_dataloader()))
    batched = first.prompt
    # The same samples one at a time, in the batch's row order (the test loader orders by length).
    by_id = {example.sample_id: example for example in dm.examples["test"]}
    collate = dm.test_dataloader().collate_fn
    singles = [collate([by_id[sample_id]]).prompt for sample_id in first.sample_id]
    model = load_smollm2(dm.embedding_dim).eval()
    lengths = [int(p.attention_mask.sum()) for p in singles]
    print(f"{args.batch} prompts of {min(lengths)}-{max(lengths)} tokens (batch padded to "
          f"{batched.input_ids.shape[1]}), {args.new_tokens} new tokens each; {load_note()}")

    # Each variant generates 1 token (prefill + one step) and N tokens, through the same
    # generate() call; decoding is the difference. Variants alternate for --repeats rounds
    # (the best round counts), so a change of machine load hits both.
    times = {"one": [], "one_1": [], "many": [], "many_1": []}
    with torch.no_grad():
        generate(model, singles[0], 2)  # warm-up
        for _ in range(args.repeats):
            with Timer() as t:
                outs = [generate(model, p, args.new_tokens) for p in singles]
            times["one"].append(t.seconds)
            with Timer() as t:
                out = generate(model, batched, args.new_tokens)
            times["many"].append(t.seconds)
            with Timer() as t:
                for p in singles:
                    generate(model, p, 1)
            times["one_1"].append(t.seconds)
            with Timer() as t:
                generate(model, batched, 1)
            times["many_1"].append(t.seconds)
    best = {k: min(v) for k, v in times.items()}
    tokens = args.batch * args.new_tokens
    assert all(o.shape[1] == args.new_tokens for o in outs) and out.shape == (args.batch, args.new_tokens)
    same = sum(bool((a[0] == b).all()) for a, b in zip(outs, out))

    rows = []
    one_decode = best["one"] - best["one_1"]
    for name, key in (("batch 1, one prompt after another", "one"), (f"batch {args.batch}", "many")):
        pre, total = best[key + "_1"], best[key]
        decode = total - pre
        rows.append([name, tokens, f"{pre:.1f}", f"{total:.1f}", f"{tokens / total:.1f}",
                     f"{best['one'] / total:.2f}", f"{decode:.1f}", f"{(tokens - args.batch) / decode:.1f}",
                     f"{one_decode / decode:.2f}"])
    print(f"rounds: {args.repeats}; seconds per round, batch 1 / batch {args.batch}: "
          + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(times["one"], times["many"])))
    print()
    print(table(["variant", "new tokens", "1 token s (prefill)", "total s", "new tokens/s", "speed-up",
                 "decode s (total - 1 token)", "decode tokens/s", "decode speed-up"], rows))
    print(f"\ngreedy outputs identical to batch 1 for {same} of {args.batch} prompts "
          "(left padding changes float rounding, so near-ties can differ)")


if __name__ == "__main__":
    main()
