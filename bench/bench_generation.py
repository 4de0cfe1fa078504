"""Batched generation: tokens/s with batch 8 against the same 8 prompts one at a time, for the
backbone's ``generate`` (``hf``) and the framework's own decoder (``native``).

    python bench/bench_generation.py                      # 8 test prompts, 32 new tokens each
    python bench/bench_generation.py --batch 4 --new-tokens 64 --backends native

Real SmolLM2-135M-Instruct (fp32) with DEP's soft prompts spliced in (untrained
adapters; the speed does not depend on their values), on the first ``--batch`` test
prompts of the Musical Instruments data, left-padded as the DataModule batches them for
generation. Every row generates exactly ``--new-tokens`` tokens (stop tokens are
ignored), so every variant produces the same number of tokens; greedy decoding, KV cache
on. Each variant also generates a single token (prefill + one step) through the same call,
so the table shows the decoding part (N tokens minus 1 token). The variants alternate
for ``--repeats`` rounds and the best round counts. Speed-ups are against ``hf`` at batch 1;
greedy outputs of every variant are compared with that one's.
"""

from __future__ import annotations

import argparse

import torch
from _common import DATA, Timer, load_note, load_smollm2, machine_line, musical_instruments, table

from dep_lightning.models.decoding import decode
from dep_lightning.models.generation import left_padded_positions


def generate(model, prompt, new_tokens: int, backend: str = "hf") -> list[list[int]]:
    """Exactly `new_tokens` greedy tokens per row (stop tokens ignored), positioned as the product generates."""
    embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
    if backend == "native":
        return decode(model, embeds, prompt.attention_mask, max_new_tokens=new_tokens, stop_ids=(),
                      input_ids=prompt.input_ids, prefix_length=prompt.prefix_length)
    out = model.backbone.generate(inputs_embeds=embeds, attention_mask=prompt.attention_mask,
                                  position_ids=left_padded_positions(prompt.attention_mask),
                                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  temperature=None, top_p=None, top_k=None,
                                  pad_token_id=model.tokenizer.pad_token_id)
    return out.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds; the best counts")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--backends", nargs="+", choices=("hf", "native"), default=["hf", "native"],
                        help="decoders to compare; the first at batch 1 is the reference")
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
    # call; decoding is the difference. Variants alternate for --repeats rounds (the best
    # round counts), so a change of machine load hits all of them.
    variants = [(backend, size) for backend in args.backends for size in (1, args.batch)]
    times = {(v, n): [] for v in variants for n in (1, args.new_tokens)}
    outputs = {}
    with torch.no_grad():
        for backend in args.backends:
            generate(model, singles[0], 2, backend)  # warm-up
        for _ in range(args.repeats):
            for backend, size in variants:
                for n in (args.new_tokens, 1):
                    with Timer() as t:
                        if size == 1:
                            out = [generate(model, p, n, backend)[0] for p in singles]
                        else:
                            out = generate(model, batched, n, backend)
                    times[(backend, size), n].append(t.seconds)
                    if n == args.new_tokens:
                        outputs[backend, size] = out
    best = {k: min(v) for k, v in times.items()}
    tokens = args.batch * args.new_tokens
    reference = outputs[variants[0]]
    assert all(len(row) == args.new_tokens for out in outputs.values() for row in out)
    base_total = best[variants[0], args.new_tokens]
    base_decode = base_total - best[variants[0], 1]

    rows = []
    for backend, size in variants:
        pre, total = best[(backend, size), 1], best[(backend, size), args.new_tokens]
        decode_s = total - pre
        same = sum(a == b for a, b in zip(reference, outputs[backend, size]))
        name = f"{backend}, " + ("batch 1, one prompt after another" if size == 1 else f"batch {size}")
        rows.append([name, tokens, f"{pre:.1f}", f"{total:.1f}", f"{tokens / total:.1f}", f"{base_total / total:.2f}",
                     f"{decode_s:.1f}", f"{(tokens - args.batch) / decode_s:.1f}", f"{base_decode / decode_s:.2f}",
                     f"{same} of {args.batch}"])
    print(f"rounds: {args.repeats}; seconds per round: " + "; ".join(
        f"{b} {s}: " + ", ".join(f"{x:.1f}" for x in times[(b, s), args.new_tokens]) for b, s in variants))
    print()
    print(table(["variant", "new tokens", "1 token s (prefill)", "total s", "new tokens/s", "speed-up",
                 "decode s (total - 1 token)", "decode tokens/s", "decode speed-up",
                 f"greedy = {variants[0][0]} batch 1"], rows))
    print("\n(greedy outputs are compared token for token; other kernels and batch shapes change float "
          "rounding, so a near-tie can flip a token)")
    for backend in args.backends:
        one, many = best[(backend, 1), args.new_tokens], best[(backend, args.batch), args.new_tokens]
        print(f"{backend}: batch {args.batch} vs batch 1 of the same decoder: {one / many:.2f}x new tokens/s")


if __name__ == "__main__":
    main()
