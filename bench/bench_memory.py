"""Peak memory of a training step against the backbone's weight size.

    python bench/bench_memory.py                         # 512, 1024 and 2048 tokens, batch 1
    python bench/bench_memory.py --lengths 1024 --batch 2
    python bench/bench_memory.py --backbone tiny --lengths 2048   # the 2-layer test model

Each measurement runs in a fresh process: load SmolLM2-135M-Instruct (fp32, frozen),
note the resident memory, then run one training step as DEP runs it — input embeddings
that require a gradient (soft prompts), forward, loss over the targets (the second half of
the tokens), backward to the input — while a thread samples the resident set size every
millisecond. "Step peak" is the highest sample minus the memory before the step:
activations kept for backward, the logits, and gradients. Two loss variants: the logits
of every position (the Hugging Face ``labels=`` loss), the LM head applied only at target
positions (what ``GenerativeModule.lm_loss`` does), and the same with gradient checkpointing
(``backbone_options.gradient_checkpointing``: each decoder layer keeps only its input and is
recomputed in the backward pass). "Saved MiB" is exact where RSS is noisy: the bytes of every
tensor autograd keeps for backward outside checkpointed regions (``saved_tensors_hooks``),
storages counted once. Each process builds the same inputs from seed 0, so the loss and the
input gradient of the checkpointed step are compared with the plain target-logits step's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from _common import load_note, machine_line, table

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


def child(length: int, batch: int, mode: str, backbone: str) -> None:
    import torch
    import torch.nn.functional as F

    from dep_lightning.models.backbone import load_backbone, tiny_backbone

    options = {"gradient_checkpointing": mode == "target logits, checkpointed"}
    if backbone == "tiny":
        model, _ = tiny_backbone(seed=0, options=options)
    else:
        model, _ = load_backbone("smollm2-135m-instruct", dtype="float32", options=options)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings counted once
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    embeds = model.get_input_embeddings()(ids).detach()
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step():
        x = embeds.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            if mode == "all logits":
                loss = model(inputs_embeds=x, labels=labels).loss
            else:
                hidden = model.model(inputs_embeds=x).last_hidden_state
                shifted = labels[:, 1:]
                keep = shifted != -100
                loss = F.cross_entropy(model.lm_head(hidden[:, :-1][keep]).float(), shifted[keep])
        loss.backward()
        return loss, x.grad

    before = rss()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    loss, grad = step()
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    print(json.dumps({"weights": weights, "before": before, "peak": peak, "seconds": seconds,
                      "saved": sum(saved.values()), "loss": loss.item(), "grad": grad.flatten().tolist()}))


MODES = ("all logits", "target logits", "target logits, checkpointed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backbone", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--child", nargs=4, metavar=("LENGTH", "BATCH", "MODE", "BACKBONE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]), args.child[2], args.child[3])
        return
    print(machine_line())

    name = "SmolLM2-135M-Instruct" if args.backbone == "smollm2" else "tiny 2-layer Llama"
    print(f"{name}, batch {args.batch}, fp32; {load_note()}")
    rows, checks, mib = [], [], 2**20
    for length in args.lengths:
        measured = {}
        for mode in MODES:
            done = subprocess.run([sys.executable, __file__, "--child", str(length), str(args.batch), mode,
                                   args.backbone], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"measurement {length} / {mode} failed:\n{done.stderr[-3000:]}")
            m = measured[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            step = m["peak"] - m["before"]
            rows.append([length * args.batch, mode, f"{m['weights'] / mib:.1f}", f"{m['before'] / mib:.0f}",
                         f"{step / mib:.0f}", f"{step / m['weights']:.2f}", f"{m['saved'] / mib:.1f}",
                         f"{m['seconds']:.2f}"])
        plain, ckpt = measured["target logits"], measured["target logits, checkpointed"]
        grad_diff = max(abs(a - b) for a, b in zip(plain["grad"], ckpt["grad"]))
        grad_scale = max(abs(a) for a in plain["grad"])
        checks.append(f"{length * args.batch} tokens, checkpointed vs target logits: |loss diff| "
                      f"{abs(plain['loss'] - ckpt['loss']):.2e} (loss {plain['loss']:.4f}), max |grad diff| "
                      f"{grad_diff:.2e} (max |grad| {grad_scale:.2e}); saved for backward "
                      f"{ckpt['saved'] / max(plain['saved'], 1):.3f}x, RSS step peak "
                      f"{(ckpt['peak'] - ckpt['before']) / max(plain['peak'] - plain['before'], 1):.2f}x, "
                      f"time {ckpt['seconds'] / plain['seconds']:.2f}x")
    print()
    print(table(["tokens", "loss over", "weights MiB", "process before step MiB", "step peak MiB",
                 "step peak / weights", "saved MiB", "step s"], rows))
    print()
    print("\n".join(checks))


if __name__ == "__main__":
    main()
