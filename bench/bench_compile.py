"""torch.compile of the frozen backbone: a DEP training step eager against compiled, side by side.

    python bench/bench_compile.py                    # K=4 without text, batch 1, 3 timed steps each
    python bench/bench_compile.py --with-text --steps 2 --threads 1

Real SmolLM2-135M-Instruct in the dtype ``backbone_dtype: auto`` picks, DEP's adapters, one
real Musical Instruments training batch (``bench/_common.py``), the product's own step
(``DEPModule.losses``: LM head at the target tokens, shared prefix from the KV cache) +
backward. The compiled variant wraps the backbone body's ``forward`` in ``torch.compile``
(inductor, static shapes: one batch shape here, as a length-bucketed fit would see many).
Printed: the compile time (the first compiled step, forward and backward), the best step
time of each variant over ``--steps`` alternating rounds, their ratio, and the loss and
largest adapter-gradient difference between the two (float rounding only).
"""

from __future__ import annotations

import argparse

import torch
from _common import Timer, load_note, machine_line, musical_instruments


def step(model, batch) -> tuple[float, torch.Tensor]:
    loss = model.losses(batch)["loss"]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=4, help="history reviews per prompt")
    parser.add_argument("--with-text", action="store_true", help="show the history reviews' text")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (alternating)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dep_lightning.data.prompt import PromptConfig
    from dep_lightning.models.dep_module import DEPModule

    print(machine_line())
    print(load_note())
    dm = musical_instruments(k=args.k, prompt=PromptConfig(with_text=args.with_text))
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    eager = DEPModule(backbone="smollm2-135m-instruct", backbone_dtype="auto", embedding_dim=dm.embedding_dim)
    torch.manual_seed(0)
    compiled = DEPModule(backbone="smollm2-135m-instruct", backbone_dtype="auto", embedding_dim=dm.embedding_dim)
    compiled.load_state_dict(eager.state_dict())
    for model in (eager, compiled):
        model.train()
        model.backbone.eval()
    body = compiled.backbone.model
    body.forward = torch.compile(body.forward, dynamic=False)  # the class's signature stays readable

    tokens = int(batch.attention_mask.sum())
    print(f"batch: {tokens} tokens, shared prefix {batch.prefix_length}, dtype {eager.backbone.dtype}")
    step(eager, batch)  # warm-up
    with Timer() as first:
        step(compiled, batch)
    print(f"compile (first compiled step, forward + backward): {first.seconds:.1f} s")
    times = {"eager": [], "compiled": []}
    results = {}
    for _ in range(args.steps):
        for name, model in (("eager", eager), ("compiled", compiled)):
            with Timer() as t:
                results[name] = step(model, batch)
            times[name].append(t.seconds)
    best = {k: min(v) for k, v in times.items()}
    (loss_e, grad_e), (loss_c, grad_c) = results["eager"], results["compiled"]
    print(f"step seconds, best of {args.steps}: eager {best['eager']:.2f}, compiled {best['compiled']:.2f} "
          f"-> compiled / eager speed {best['eager'] / best['compiled']:.2f}x; rounds: "
          + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(times["eager"], times["compiled"])))
    print(f"|loss diff| {abs(loss_e - loss_c):.2e} (loss {loss_e:.4f}); max |grad diff| "
          f"{float((grad_e - grad_c).abs().max()):.2e} (max |grad| {float(grad_e.abs().max()):.2e})")
    steps_to_repay = first.seconds / max(1e-9, best["eager"] - best["compiled"])
    if best["compiled"] < best["eager"]:
        print(f"compile time repaid after {steps_to_repay:.0f} steps of one batch shape")
    else:
        print("compiled steps are not faster: compile time never repaid")


if __name__ == "__main__":
    main()
