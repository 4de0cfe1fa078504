"""Peak memory of a training step against the backbone's weight size.

    python bench/bench_memory.py                         # 512, 1024 and 2048 tokens, batch 1
    python bench/bench_memory.py --lengths 1024 --batch 2

Each measurement runs in a fresh process: load SmolLM2-135M-Instruct (fp32, frozen),
note the resident memory, then run one training step as DEP runs it — input embeddings
that require a gradient (soft prompts), forward, loss over the targets (the second half of
the tokens), backward to the input — while a thread samples the resident set size every
millisecond. "Step peak" is the highest sample minus the memory before the step:
activations kept for backward, the logits, and gradients. Two loss variants: the logits
of every position (what ``DEPModule.losses`` does through the Hugging Face loss), and the
LM head applied only at target positions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from _common import load_note, table

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, rss())


def child(length: int, batch: int, mode: str) -> None:
    import torch
    import torch.nn.functional as F

    from dep_lightning.models.backbone import load_backbone

    model, _ = load_backbone("smollm2-135m-instruct", dtype="float32")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings counted once
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    embeds = model.get_input_embeddings()(ids).detach()

    def step():
        x = embeds.clone().requires_grad_(True)
        if mode == "all logits":
            loss = model(inputs_embeds=x, labels=labels).loss
        else:
            hidden = model.model(inputs_embeds=x).last_hidden_state
            shifted = labels[:, 1:]
            keep = shifted != -100
            loss = F.cross_entropy(model.lm_head(hidden[:, :-1][keep]).float(), shifted[keep])
        loss.backward()
        return x.grad

    before = rss()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    print(json.dumps({"weights": weights, "before": before, "peak": peak, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("LENGTH", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]), args.child[2])
        return

    print(f"batch {args.batch}, fp32; {load_note()}")
    rows, mib = [], 2**20
    for length in args.lengths:
        for mode in ("all logits", "target logits"):
            done = subprocess.run([sys.executable, __file__, "--child", str(length), str(args.batch), mode],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"measurement {length} / {mode} failed:\n{done.stderr[-3000:]}")
            m = json.loads(done.stdout.strip().splitlines()[-1])
            step = m["peak"] - m["before"]
            rows.append([length * args.batch, mode, f"{m['weights'] / mib:.0f}", f"{m['before'] / mib:.0f}",
                         f"{step / mib:.0f}", f"{step / m['weights']:.2f}", f"{m['seconds']:.1f}"])
    print()
    print(table(["tokens", "loss over", "weights MiB", "process before step MiB", "step peak MiB",
                 "step peak / weights", "step s"], rows))


if __name__ == "__main__":
    main()
