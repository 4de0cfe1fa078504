"""Training throughput: Lightning `fit` against a bare PyTorch loop, and against fixed-length padding.

    python bench/bench_fit_throughput.py                    # 1 warm-up + 6 timed steps per variant, batch 2
    python bench/bench_fit_throughput.py --steps 2 --skip fixed prefix

Real SmolLM2-135M-Instruct (fp32), DEP adapters, the real Musical Instruments prompts
(k=4 history reviews with text, his + diff slots; see bench/_common.py). Everything
trains on the same batches (the DataModule's length-bucketed order) from the same
starting weights, in one process, interleaved so that the load of a shared machine hits
the compared variants alike. Two tables:

1. Loops, interleaved step by step: ``Trainer.fit`` with the DataModule (no validation,
   logging or checkpoints; gradient clipping 1.0 as in the quickstart) runs each batch,
   then a callback runs the bare loop's step on the same batch with its own copy of the
   model: ``DEPModule.losses``, backward, clipping and AdamW by hand. Lightning's step
   time includes its batch loading and hooks; the bare step's does not.
2. Step variants, interleaved batch by batch (each batch goes through every variant
   before the next batch is loaded, the first variant rotating), so a change of machine
   load hits all of them alike:
   the bare step (``DEPModule.losses``: LM head at target tokens only, the prompt prefix
   every sample shares read from a KV cache); every batch padded to ``--fixed-length``
   tokens, as the reference implementation padded every sequence (to 5,121 tokens); the
   Hugging Face ``labels=`` loss (LM head at every position, the prompt's logits computed
   and thrown away, no prefix cache); the shared prefix recomputed in every step.

Tokens are real (unpadded) tokens. Ratios are given on wall time and on this process's
CPU time (all threads); on a machine shared with other jobs both move with the load, which
is why the variants are interleaved. Before timing, every variant's loss is checked
against ``DEPModule.losses`` on the first batch, and the padding share of each batching
strategy over a whole epoch is printed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import time

import lightning as L
import torch
import torch.nn.functional as F
from _common import DATA, Timer, length_stats, load_note, load_smollm2, machine_line, musical_instruments, table

IGNORE = -100


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


class Interleaved(L.Callback):
    """Runs a bare-loop step on every batch right after Lightning's step on it, timing both.

    Lightning's step is timed from the end of the previous bare step (so its own batch
    fetching and hooks count) to ``on_train_batch_end``; the bare step is timed around
    itself. Each loop has its own copy of the model and its own optimizer.
    """

    def __init__(self, bare: "BareRun", bare_model):
        self.bare, self.bare_model = bare, bare_model
        self.lightning: list[tuple[float, float]] = []
        self.tokens: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.resume = clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        end = clock()
        self.lightning.append((end[0] - self.resume[0], end[1] - self.resume[1]))
        self.tokens.append(int(batch.attention_mask.sum()))
        self.bare.step(self.bare_model, batch)
        self.resume = clock()


def fit_interleaved(dm, model, start: dict, n_batches: int) -> tuple["Interleaved", "BareRun"]:
    lightning_model, bare_model = copy.deepcopy(model), copy.deepcopy(model)
    bare = BareRun(bare_model, start, full_loss)
    interleaved = Interleaved(bare, bare_model)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_epochs=1, limit_train_batches=n_batches,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                        accumulate_grad_batches=1, callbacks=[interleaved])
    trainer.fit(lightning_model, datamodule=dm)
    return interleaved, bare


# -- loss variants for the bare loop ------------------------------------------------------
def full_loss(model, batch):
    return model.losses(batch)["loss"]


def adapters_loss(model, aux, gen):
    h = model.hparams
    return gen + h.lam * (aux["recon"] + h.gamma * aux["sparse"])


def all_logits_loss(model, batch):
    """The Hugging Face ``labels=`` loss: logits at every position, prompt ones masked out afterwards."""
    embeds, aux = model.input_embeddings(batch.input_ids, batch.slots)
    out = model.backbone(inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels)
    return adapters_loss(model, aux, out.loss)


def no_prefix_loss(model, batch):
    """DEPModule's loss with the shared prompt prefix run through the LLM like every other token."""
    return model.losses(dataclasses.replace(batch, prefix_length=0))["loss"]


def pad_to(batch, length: int, pad_id: int):
    extra = length - batch.input_ids.shape[1]
    if extra < 0:
        raise SystemExit(f"--fixed-length {length} is shorter than a batch ({batch.input_ids.shape[1]} tokens)")
    return dataclasses.replace(batch, input_ids=F.pad(batch.input_ids, (0, extra), value=pad_id),
                               attention_mask=F.pad(batch.attention_mask, (0, extra), value=0),
                               labels=F.pad(batch.labels, (0, extra), value=IGNORE))


class BareRun:
    """One bare-loop variant: its own adapter weights and optimizer on the shared model."""

    def __init__(self, model, start: dict, loss_fn):
        self.loss_fn, self.state = loss_fn, {k: v.clone() for k, v in start.items()}
        model.load_state_dict(self.state, strict=False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=model.hparams.lr, weight_decay=model.hparams.weight_decay)
        self.seconds, self.cpu, self.tokens = [], [], []

    def step(self, model, batch) -> None:
        model.load_state_dict(self.state, strict=False)  # copies into the same tensors the optimizer holds
        wall, cpu = clock()
        loss = self.loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        end = clock()
        self.seconds.append(end[0] - wall)
        self.cpu.append(end[1] - cpu)
        self.tokens.append(int(batch.attention_mask.sum()))
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.state}


def padding_shares(lengths: list[int], batch_size: int, fixed: int) -> dict[str, float]:
    """Share of computed positions that are padding over one epoch, per batching strategy."""
    import numpy as np

    from dep_lightning.data.batching import LengthBucketSampler

    lengths = np.asarray(lengths)
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bucketed = list(LengthBucketSampler(lengths, batch_size, seed=0))
    real = lengths.sum()

    def share(batches, width):
        computed = sum(len(b) * width(b) for b in batches)
        return 1 - real / computed

    return {"length buckets (DataModule)": share(bucketed, lambda b: lengths[b].max()),
            "random batches, dynamic padding": share(random_batches, lambda b: lengths[b].max()),
            f"fixed length {fixed}": share(random_batches, lambda b: fixed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--fixed-length", type=int, default=2048, help="padded length of the fixed-length variant")
    parser.add_argument("--skip", nargs="*", default=[], choices=["fixed", "target", "prefix"],
                        help="leave out these bare-loop variants")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    print(machine_line())
    if args.warmup < 0 or args.steps < 1:
        parser.error("need --warmup >= 0 and --steps >= 1")
    torch.manual_seed(0)

    with Timer() as setup:
        dm = musical_instruments(k=args.k, batch_size=args.batch_size, data=args.data)
    n = args.warmup + args.steps
    print(f"data: {length_stats(dm.examples['train'])} (set-up {setup.seconds:.0f} s)")
    lengths = [len(e.input_ids) for e in dm.examples["train"]]
    shares = padding_shares(lengths, args.batch_size, args.fixed_length)
    print(f"padding share of computed positions over one epoch, batch {args.batch_size}: "
          + "; ".join(f"{name} {value:.1%}" for name, value in shares.items()))
    model = load_smollm2(dm.embedding_dim)
    start = {k: v.clone() for k, v in model.state_dict().items() if k in model.trainable_state_keys()}
    pad_id = dm.tokenizer.pad_token_id
    first = next(iter(dm.train_dataloader()))
    prefix = first.prefix_length
    print(f"shared prompt prefix: {prefix} tokens; batch size {args.batch_size}; {load_note()}")

    # The variants compute DEP's loss: check on the first batch before timing anything
    # (with gradients on, as in training: the shared-prefix cache is only used then).
    with torch.enable_grad():
        reference = full_loss(model, first).item()
        checks = {"fixed length": full_loss(model, pad_to(first, args.fixed_length, pad_id)).item(),
                  "every position's logits": all_logits_loss(model, first).item(),
                  "prefix recomputed": no_prefix_loss(model, first).item()}
    print("loss on the first batch: DEPModule.losses " + f"{reference:.6f}; "
          + "; ".join(f"{name} {value:.6f} (diff {abs(value - reference):.1e})" for name, value in checks.items()))

    # 1. Lightning against the bare loop, interleaved step by step on the same batches.
    interleaved, bare = fit_interleaved(dm, model, start, n)
    w = args.warmup
    light = (sum(interleaved.tokens[w:]), sum(t for t, _ in interleaved.lightning[w:]),
             sum(c for _, c in interleaved.lightning[w:]))
    plain = (sum(bare.tokens[w:]), sum(bare.seconds[w:]), sum(bare.cpu[w:]))
    assert light[0] == plain[0]
    rows = [[name, args.steps, t, f"{wall:.1f}", f"{cpu:.1f}", f"{t / wall:.1f}",
             f"{(t / wall) / (plain[0] / plain[1]):.3f}", f"{(t / cpu) / (plain[0] / plain[2]):.3f}"]
            for name, (t, wall, cpu) in (("lightning fit", light), ("bare loop", plain))]
    print()
    print(table(["loop (interleaved)", "steps", "real tokens", "wall s", "CPU s", "tokens/s (wall)",
                 "vs bare (wall)", "vs bare (CPU)"], rows))
    per_step = [b / a for (a, _), b in zip(interleaved.lightning[w:], bare.seconds[w:])]
    ordered, mid = sorted(per_step), len(per_step) // 2
    median = ordered[mid] if len(per_step) % 2 else sum(ordered[mid - 1:mid + 1]) / 2
    print(f"per step, bare seconds / Lightning seconds: {', '.join(f'{r:.2f}' for r in per_step)} "
          f"(median {median:.3f})")

    # 2. Variants of the step, interleaved batch by batch so that load changes hit all alike.
    variants = {"bare step": full_loss}
    if "fixed" not in args.skip:
        variants[f"fixed length {args.fixed_length}"] = lambda m, b: full_loss(m, pad_to(b, args.fixed_length, pad_id))
    if "target" not in args.skip:
        variants["every position's logits (HF labels=)"] = all_logits_loss
    if "prefix" not in args.skip:
        variants[f"shared prefix ({prefix} tokens) recomputed"] = no_prefix_loss
    if len(variants) > 1:
        runs = {name: BareRun(model, start, fn) for name, fn in variants.items()}
        order = list(runs.values())
        for number, batch in enumerate(itertools.islice(dm.train_dataloader(), n)):
            # Rotate which variant goes first, so none always runs right after a batch load
            # or right after the largest (fixed-length) step.
            shift = number % len(order)
            for run in order[shift:] + order[:shift]:
                run.step(model, batch)
        base = None
        rows = []
        for name, run in runs.items():
            tokens = sum(run.tokens[args.warmup:])
            wall, cpu = sum(run.seconds[args.warmup:]), sum(run.cpu[args.warmup:])
            base = base or (tokens / wall, tokens / cpu)
            rows.append([name, args.steps, tokens, f"{wall:.1f}", f"{cpu:.1f}", f"{tokens / wall:.1f}",
                         f"{tokens / wall / base[0]:.3f}", f"{tokens / cpu / base[1]:.3f}"])
        print()
        print(table(["step variant (interleaved)", "steps", "real tokens", "wall s", "CPU s", "tokens/s (wall)",
                     "vs bare step (wall)", "vs bare step (CPU)"], rows))


if __name__ == "__main__":
    main()
