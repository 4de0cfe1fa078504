"""Prompt length against K (history reviews per prompt) on the real Musical Instruments data.

    python bench/bench_prompt_length.py                   # K = 1, 2, 4, 8, with and without review text
    python bench/bench_prompt_length.py --k 2 4

A training step costs about what its tokens cost (bench/bench_flops.py: the attention
share stays small up to 2,048 tokens), so this table is the step cost's growth with K.
Prompts are built by the DataModule as in training (2,048-token budget: the oldest
histories are dropped when prompt + target would exceed it, which caps the growth; users
with fewer than K earlier reviews get fewer). Data only, no model: a minute or two.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATA, machine_line, musical_instruments, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    print(machine_line())

    from dataclasses import replace

    rows, base = [], None
    dm = musical_instruments(k=max(args.k), data=args.data)
    for with_text in (True, False):
        for k in args.k:
            dm.k, dm.prompt = k, replace(dm.prompt, with_text=with_text)
            examples = dm.build_examples("train")
            lengths = np.array([len(e.input_ids) for e in examples])
            slots = np.array([len(e.slot_pos) for e in examples])
            shown = np.array([len(e.history) for e in examples])
            retrieved = np.array([len(e.retrieved) for e in examples])
            base = base or lengths.mean()
            rows.append([k, "yes" if with_text else "no", f"{lengths.mean():.0f}", f"{np.percentile(lengths, 90):.0f}",
                         f"{retrieved.mean():.2f}", f"{shown.mean():.2f}", f"{1 - shown.sum() / retrieved.sum():.1%}",
                         f"{slots.mean():.1f}", f"{lengths.mean() / base:.2f}"])
    print(f"{len(examples)} training samples\n")
    print(table(["K", "review text", "tokens mean", "tokens p90", "reviews retrieved", "reviews shown",
                 "dropped for the budget",
                 "slots", f"tokens vs K={args.k[0]} with text"], rows))


if __name__ == "__main__":
    main()
