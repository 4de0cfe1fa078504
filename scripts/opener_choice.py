"""Forced-choice group recall of a trained positive-control run, by likelihood of the opening line.

Generation-level signature recall (scripts/positive_control_summary.py) needs the model to
write a review in the planted format before a signature can appear; after a few hundred
steps of prompt tuning a frozen 135M model mostly does not, for any method. This asks the
narrower question directly: which style group's opening line ("Saltmarsh report, as
promised.") does the model expect this user's review to start with?

For each scored test sample the prompt is the run's own (soft prompts, instruction, item)
and the target is, in turn, each group's opening line alone (teacher-forced, summed NLL
over its tokens and the end-of-turn token). Nothing of the reference is shown, so the
choice depends on the prompt only: a model without a user channel can vary it with the
item at most, and a model whose soft prompts carry the user's group can pick that group.
The model's choice is the group whose opener has the lowest NLL. Reported: the share of
samples whose choice is the user's own group (``own``), the share a constant chooser would
get (``constant_best``: the most common own group), how often each group is chosen, the
mean NLL margin of the own opener over the best other one (nats; > 0 = own preferred), and
the same under ``swap`` (the prompt built from another user's history, as the scoring
condition): if the choice follows the prompt's user, ``own`` falls and ``swap_follows``
(the share choosing the swapped-in user's group) rises.

    python scripts/opener_choice.py runs/positive_control/dep_signal [--ckpt CKPT] [--limit 96] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from dep_lightning.data.conditions import apply_condition
from dep_lightning.data.sources import EmbeddedSource
from dep_lightning.data.synthetic import GROUP_STYLES, style_groups_of


def best_checkpoint(run: Path) -> Path:
    found = sorted(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    if not found:
        raise SystemExit(f"{run}/checkpoints: no checkpoint besides last.ckpt (pass --ckpt)")
    return found[-1]


def load(run: Path, ckpt: Path):
    from dep_lightning.training import DEPLightningCLI

    # The run's saved fit config, less what only the fit subcommand takes.
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("ckpt_path", "weights_only"):
        config.pop(key, None)
    config["run_dir"] = None
    config["trainer"]["logger"] = False
    cli = DEPLightningCLI(args=["--config", json.dumps(config)], run=False, save_config_callback=None)
    model, dm = cli.model, cli.datamodule
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.on_load_checkpoint(state)
    result = model.load_state_dict(state["state_dict"], strict=False)
    if result.unexpected_keys:
        raise SystemExit(f"{ckpt}: unexpected keys {result.unexpected_keys[:5]}")
    return model.eval(), dm


@torch.no_grad()
def nll_by_opener(model, dm, samples, openers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Summed NLL of each group's opener as the whole target, per sample id and group."""
    nll: dict[str, dict[str, float]] = {}
    for group, opener in openers.items():
        dm.samples["score"] = [replace(s, target=replace(s.target, text=opener)) for s in samples]
        dm.examples = {k: v for k, v in dm.examples.items() if not k.startswith("score")}
        for batch in dm.score_loader("true"):
            sums, _ = model.score_batch(batch)
            for sample_id, value in zip(batch.sample_id, sums.tolist()):
                nll.setdefault(sample_id, {})[group] = value
    return nll


def summarize(nll: dict[str, dict[str, float]], own_group: dict[str, str]) -> dict:
    choice = {sid: min(values, key=values.get) for sid, values in nll.items()}
    margins = [min(v for g, v in nll[sid].items() if g != own_group[sid]) - nll[sid][own_group[sid]] for sid in nll]
    n = len(nll)
    return {"n": n, "own": sum(choice[sid] == own_group[sid] for sid in nll) / n,
            "constant_best": max(Counter(own_group[sid] for sid in nll).values()) / n,
            "chosen": dict(sorted(Counter(choice.values()).items())), "mean_margin": sum(margins) / n}


def choose(run: Path, ckpt: Path, limit: int | None) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    groups = style_groups_of(EmbeddedSource(**config["data"]["init_args"]["source"]["init_args"]).config())
    openers = {signoff: opener for signoff, opener, *_ in GROUP_STYLES if signoff in set(groups.values())}
    model, dm = load(run, ckpt)
    dm.score_limit = limit
    dm.samples.pop("score", None)
    base = dm.scored_samples()
    true_nll = nll_by_opener(model, dm, base, openers)
    print(f"opener choice: {run.name}: {len(base)} samples x {len(openers)} openers, true", flush=True)
    swapped = apply_condition(base, "swap", dm.k, seed=dm.seed)
    swap_nll = nll_by_opener(model, dm, swapped, openers)
    print(f"opener choice: {run.name}: swap", flush=True)
    own = {s.sample_id: groups[s.user_id] for s in base}
    prompt_user = {s.sample_id: groups[s.history[-1].user_id] for s in swapped}
    swap = summarize(swap_nll, own)
    swap["swap_follows"] = summarize(swap_nll, prompt_user)["own"]
    return {"run": run.name, "checkpoint": ckpt.name, "openers": openers, "true": summarize(true_nll, own),
            "swap": swap, "samples": {sid: {"own": own[sid], "swap_user_group": prompt_user[sid], "true": true_nll[sid],
                                            "swap": swap_nll[sid]} for sid in sorted(true_nll)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run directory with config.yaml and checkpoints/")
    parser.add_argument("--ckpt", help="checkpoint (default: the best one in RUN/checkpoints)")
    parser.add_argument("--limit", type=int, default=96, help="scored test samples considered (default 96)")
    parser.add_argument("--out", help="write the result JSON here (default RUN/analysis/signoff_choice.json)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    ckpt = Path(args.ckpt) if args.ckpt else best_checkpoint(run)
    result = choose(run, ckpt, args.limit)
    out = Path(args.out) if args.out else run / "analysis" / "opener_choice.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for condition in ("true", "swap"):
        r = result[condition]
        extra = f", choosing the swapped-in user's group {r['swap_follows']:.3f}" if condition == "swap" else ""
        print(f"opener choice: {run.name} [{condition}]: n {r['n']}, own group {r['own']:.3f} (constant chooser "
              f"{r['constant_best']:.3f}){extra}, mean margin {r['mean_margin']:+.3f} nats, chosen {r['chosen']}")

if __name__ == "__main__":
    main()
