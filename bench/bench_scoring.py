"""Likelihood scoring (``dep-lightning score``) against generation, on the same test samples.

    python bench/bench_scoring.py                          # 32 test samples, batches of 8, 128 new tokens
    python bench/bench_scoring.py --samples 16 --new-tokens 64 --repeats 1

The quickstart's data (configs/quickstart.yaml): the embedded dataset (``EmbeddedSource``,
120 users, 120 items, seed 0), K = 2 history reviews with text, his + diff slots, guidance,
all-MiniLM-L6-v2 slot vectors (read from the embedding cache the demo fills; embedded once
if missing). Real SmolLM2-135M-Instruct with ``backbone_dtype="auto"`` (bf16 on CPUs with
avx512_bf16 / amx_bf16 and on capable GPUs, fp32 elsewhere) inside ``DEPModule`` with untrained
adapters (the speed does not depend on their values). The first ``--samples`` test samples
(the DataModule's ``limit_test`` / ``score_limit``, the same samples) through the real loaders:

* **score**: ``DEPDataModule.score_loader("true")`` (prompt + reference, right-padded,
  longest first) and ``GenerativeModule.score_batch``: one forward pass per sample, the LM
  head only at the reference's tokens.
* **generate, stop at end of turn**: the test loader (left-padded prompts, similar lengths
  together) and ``GenerativeModule.generate_outputs`` with greedy decoding, up to
  ``--new-tokens`` tokens, stopping at an end-of-turn / EOS token as test runs do. Untrained
  soft prompts can make the model stop early, so its new tokens are counted.
* **generate, forced length** (the headline): the same batches and embeddings through the
  decoder test runs use here (the native one on CPU, ``models/decoding.py``, with no stop
  token; else the backbone's ``generate`` with ``min_new_tokens = max_new_tokens``), so every
  sample gets exactly that many new tokens (the cost of outputs that use the whole budget).
* **generate 1 token**: the same call with one new token: the prompts' prefill, which
  generation cannot avoid and which is about the size of scoring's forward pass (the
  prompt plus a reference of ~100 tokens). Scoring's advantage is then roughly
  (prefill + decoding) / prefill: large where decoding steps are slow next to a
  compute-bound prefill, small on a few CPU cores where the prefill dominates.

On a busy machine, torch's default of one thread per core oversubscribes the cores and
slows decoding most (hundreds of small ops per step, each waiting for both threads);
``--threads 1`` measures without that.

After a warm-up (one scoring batch, one 2-token generation) the variants alternate for ``--repeats``
rounds (the first variant rotating) and the best round counts. Printed: samples/s, tokens
scored/s or new tokens/s, and scoring's samples/s over each generation variant's.
"""

from __future__ import annotations

import argparse

import torch
from _common import Timer, load_note, machine_line, table

from dep_lightning.models.generation import left_padded_positions


def datamodule(samples: int, batch_size: int, k: int, with_text: bool):
    from dep_lightning.data.datamodule import DEPDataModule
    from dep_lightning.data.prompt import PromptConfig
    from dep_lightning.data.sources import EmbeddedSource

    dm = DEPDataModule(source=EmbeddedSource(num_users=120, num_items=120, seed=0), k=k,
                       prompt=PromptConfig(with_text=with_text, max_target_tokens=256), eval_batch_size=batch_size,
                       limit_train=1, limit_val=1, limit_test=samples, score_limit=samples)
    dm.prepare_data()
    dm.setup("test")
    return dm


def score(model, batches: list[dict]) -> tuple[int, int, float]:
    """(samples, reference tokens, summed NLL) of teacher-forced scoring."""
    n = tokens = 0
    nll_sum = 0.0
    for batch in batches:
        nll, count = model.score_batch(batch)
        n, tokens, nll_sum = n + nll.shape[0], tokens + int(count.sum()), nll_sum + float(nll.sum())
    return n, tokens, nll_sum


def generate_stopping(model, batches: list[dict], new_tokens: int) -> tuple[int, int, int]:
    """(samples, new tokens up to the stop token, samples that hit the limit) of test-time generation."""
    from dep_lightning.models.generation import GenerationConfig

    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False)
    n = tokens = full = 0
    for batch in batches:
        outs = model.generate_outputs(batch.prompt, key=batch.sample_id[0], generation=config)
        n, tokens, full = n + len(outs), tokens + sum(o.tokens for o in outs), full + sum(o.hit_limit for o in outs)
    return n, tokens, full


def generate_forced(model, batches: list[dict], new_tokens: int) -> tuple[int, int, int]:
    """(samples, new tokens, samples with every token) of generation forced to ``new_tokens`` tokens,
    by the decoder ``generate_outputs`` uses here (``generation_backend``, ``auto`` resolved): the
    native decoder with no stop token, or ``generate`` with ``min_new_tokens = max_new_tokens``."""
    from dep_lightning.models.decoding import decode

    n = tokens = full = 0
    for batch in batches:
        prompt = batch.prompt
        embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
        if model.generation_backend(embeds.device) == "native":
            rows = decode(model, embeds, prompt.attention_mask, max_new_tokens=new_tokens, stop_ids=(),
                          input_ids=prompt.input_ids, prefix_length=prompt.prefix_length)
            assert all(len(r) == new_tokens for r in rows)
            n, tokens, full = n + len(rows), tokens + new_tokens * len(rows), full + len(rows)
            continue
        out = model.backbone.generate(inputs_embeds=embeds.to(model.backbone.dtype),
                                      attention_mask=prompt.attention_mask,
                                      position_ids=left_padded_positions(prompt.attention_mask),
                                      max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None,
                                      top_k=None, pad_token_id=model.tokenizer.pad_token_id,
                                      eos_token_id=model.stop_ids)
        assert out.shape == (prompt.input_ids.shape[0], new_tokens), out.shape
        n, tokens, full = n + out.shape[0], tokens + out.numel(), full + out.shape[0]
    return n, tokens, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32, help="test samples (limit_test = score_limit)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of scoring and generation")
    parser.add_argument("--new-tokens", type=int, default=128, help="max_new_tokens of generation (greedy)")
    parser.add_argument("--k", type=int, default=2, help="history reviews per prompt (quickstart: 2)")
    parser.add_argument("--no-text", action="store_true", help="prompts without history review text")
    parser.add_argument("--dtype", default="auto", help="backbone_dtype (auto: bf16 where native)")
    parser.add_argument("--device", default="cpu", help="torch device of the model and batches")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core); "
                             "1 avoids oversubscription on a busy machine")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds; the best counts")
    args = parser.parse_args()

    from dep_lightning.models.dep_module import DEPModule

    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"at start: {load_note()}")
    dm = datamodule(args.samples, args.batch_size, args.k, not args.no_text)
    dm.scoring_conditions = None
    gen_batches = list(dm.test_dataloader())
    score_batches = list(dm.score_loader("true"))
    gen_ids = sorted(i for b in gen_batches for i in b.sample_id)
    score_ids = sorted(i for b in score_batches for i in b.sample_id)
    assert gen_ids == score_ids, "scoring and generation must see the same samples"
    model = DEPModule(backbone="smollm2-135m-instruct", backbone_dtype=args.dtype,
                      embedding_dim=dm.embedding_dim, seed=0).eval().to(args.device)
    print(f"decoder: {model.generation_backend(args.device)} (generation_backend "
          f"{model.backbone_options.generation_backend})")
    if args.device != "cpu":
        from lightning.fabric.utilities.apply_func import move_data_to_device

        gen_batches, score_batches = move_data_to_device((gen_batches, score_batches), torch.device(args.device))
    n = len(gen_ids)
    prompts = [e.prompt_length for e in dm.examples["test"]]
    full = [len(e.input_ids) for e in dm.split_examples("score")]
    refs = [f - p for f, p in zip(full, [e.prompt_length for e in dm.split_examples("score")])]
    print(f"backbone dtype {model.backbone.dtype} (backbone_dtype={args.dtype!r}); {n} test samples of the embedded "
          f"dataset, K = {args.k} {'without' if args.no_text else 'with'} text, batches of {args.batch_size}; "
          f"prompts {min(prompts)}-{max(prompts)} tokens (mean {sum(prompts) / n:.0f}), references "
          f"{min(refs)}-{max(refs)} tokens (mean {sum(refs) / n:.0f}); greedy, {args.new_tokens} new tokens")
    real = sum(int(b.attention_mask.sum()) for b in score_batches)
    padded = sum(b.attention_mask.numel() for b in score_batches)
    prompt_real = sum(int(b.prompt.attention_mask.sum()) for b in gen_batches)
    prompt_padded = sum(b.prompt.attention_mask.numel() for b in gen_batches)
    print(f"positions run forward: scoring {real} real of {padded} (right-padded); generation's prefill "
          f"{prompt_real} real of {prompt_padded} (left-padded)")

    variants = {
        "score": lambda: score(model, score_batches),
        "generate, stop at end of turn": lambda: generate_stopping(model, gen_batches, args.new_tokens),
        f"generate, forced {args.new_tokens} tokens": lambda: generate_forced(model, gen_batches, args.new_tokens),
        "generate 1 token (prefill)": lambda: generate_forced(model, gen_batches, 1),
    }
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, tuple] = {}
    with torch.no_grad():
        score(model, score_batches[:1])  # warm-up: one batch each
        generate_forced(model, gen_batches[:1], 2)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                with Timer() as t:
                    results[name] = variants[name]()
                    if model.device.type == "cuda":
                        torch.cuda.synchronize()
                times[name].append(t.seconds)
    best = {name: min(v) for name, v in times.items()}
    print(f"at end: {load_note()}")
    print("rounds (s): " + "; ".join(f"{name}: " + ", ".join(f"{s:.1f}" for s in v) for name, v in times.items()))

    rate = {name: results[name][0] / best[name] for name in names}
    samples, scored, nll_sum = results["score"]
    rows = [["score (teacher-forced, LM head at reference tokens)", samples, f"{scored} scored", "",
             f"{best['score']:.2f}", f"{rate['score']:.2f}", f"{scored / best['score']:.0f} scored", "1.0"]]
    for name in names[1:]:
        count, tokens, hit = results[name]
        rows.append([name, count, f"{tokens} new", f"{tokens / count:.1f}", f"{best[name]:.2f}",
                     f"{rate[name]:.3f}", f"{tokens / best[name]:.1f} new", f"{rate['score'] / rate[name]:.1f}"])
        assert count == samples
    print()
    print(table(["variant", "samples", "tokens", "new tokens per sample", "best s", "samples/s", "tokens/s",
                 "score samples/s over this"], rows))
    forced = names[2]
    stopped = results[names[1]]
    print(f"\nheadline: scoring / generation of exactly {args.new_tokens} new tokens = "
          f"{rate['score'] / rate[forced]:.1f}x samples/s (goal >= 20x); "
          f"against generation that stops at end of turn: {rate['score'] / rate[names[1]]:.1f}x "
          f"({stopped[2]} of {stopped[0]} samples reached {args.new_tokens} tokens)")
    prefill = names[3]
    print(f"prefill: generating 1 token takes {best[prefill] / best['score']:.2f}x scoring's time; decoding the "
          f"other {args.new_tokens - 1} tokens adds {best[forced] - best[prefill]:.1f} s "
          f"({(best[forced] - best[prefill]) / best[prefill]:.1f}x the prefill)")
    print(f"mean reference NLL {nll_sum / max(1, scored):.3f} nats/token (untrained adapters)")


if __name__ == "__main__":
    main()
