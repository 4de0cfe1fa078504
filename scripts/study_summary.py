"""Summary of the real-data study, second edition (docs/results.md; written by ``make study``).

For every scored run under RUNS (a ``metrics.json`` with a likelihood block, exported or not),
one entry: the method and its ablation keys, the seed, the number of scored test samples
``n`` and ``whole_split`` (the run's ``data.init_args.score_limit`` was null, so ``n`` is the
test split's size; every such run must have the same ``n``), the mean NLL per target token under each
scored condition, the swap gain (NLL(swap) - NLL(true) per sample) with its 95 % bootstrap
interval and paired p-value, ``p_vs_no_user``: the paired bootstrap p-value of the run's
per-sample NLL(true) against the trained no-user control's with the same seed and the same
``with_text`` (None where that run is missing), and the training steps: the last optimizer
step logged, the step of the best ``val/nll`` and that value.

    python scripts/study_summary.py docs/results/v2/runs --out docs/results/v2/summary.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml

from dep_lightning.results.stats import MetricSamples, paired_bootstrap
from dep_lightning.scoring import aligned

RESAMPLES, SEED = 1000, 0


def per_token_true(folder: Path) -> dict[str, float]:
    """sample id -> NLL per target token under ``true`` (scores/test.jsonl)."""
    rows = [json.loads(line) for line in (folder / "scores" / "test.jsonl").read_text().splitlines() if line.strip()]
    ids, by = aligned(rows, ["true"])
    return {i: r["nll"] / max(1, r["tokens"]) for i, r in zip(ids, by["true"])}


def training_steps(folder: Path) -> dict[str, float | int | None]:
    """The last optimizer step in the fit log, and where ``val/nll`` was best."""
    log = folder / "metrics-fit.csv"
    if not log.is_file():
        log = folder / "metrics.csv"
    if not log.is_file():
        return {"steps": None, "best_step": None, "best_val_nll": None}
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(r["step"]) for r in rows if r.get("step") not in (None, "")]
    val = [(float(r["val/nll"]), int(r["step"])) for r in rows if r.get("val/nll") not in (None, "")]
    best = min(val) if val else (None, None)
    return {"steps": max(steps) if steps else None, "best_step": best[1], "best_val_nll": best[0]}


def summarize_run(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    likelihood = json.loads((folder / "metrics.json").read_text())["likelihood"]
    overall = likelihood["overall"]
    swap = overall["gains"].get("swap", {})
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    limit = ((config.get("data") or {}).get("init_args") or {}).get("score_limit")
    entry = {
        "run": str(folder), "method": manifest["method"], "ablation": manifest.get("ablation", {}),
        "options": manifest.get("options", {}), "seed": manifest.get("seed"), "n": overall["n"],
        "whole_split": bool(config) and limit is None,
        **{f"nll_{c}": overall[f"nll_{c}"] for c in likelihood["conditions"]},
        "gain": swap.get("gain"), "gain_ci95": swap.get("gain_ci95"), "p_value": swap.get("p_value"),
        "gains": {c: {k: g[k] for k in ("gain", "gain_ci95", "p_value")} for c, g in overall["gains"].items()},
        **training_steps(folder),
    }
    return entry


def paired_against(entry: dict, reference: dict | None) -> float | None:
    """Paired bootstrap p-value of the run's per-sample NLL(true) against ``reference``'s."""
    if reference is None or reference is entry:
        return None
    mine, theirs = per_token_true(Path(entry["run"])), per_token_true(Path(reference["run"]))
    if sorted(mine) != sorted(theirs):
        raise ValueError(f"{entry['run']} and {reference['run']} scored different samples")
    ids = sorted(mine)
    test = paired_bootstrap(MetricSamples("nll", np.array([mine[i] for i in ids])),
                            MetricSamples("nll", np.array([theirs[i] for i in ids])), RESAMPLES, SEED)
    return test.p_value


def summarize(root: Path) -> dict:
    folders = sorted(p.parent for p in root.rglob("metrics.json") if "likelihood" in json.loads(p.read_text()))
    if not folders:
        raise SystemExit(f"no run with a likelihood block under {root}")
    entries = [summarize_run(folder) for folder in folders]
    whole = {e["n"] for e in entries if e["whole_split"]}
    if len(whole) > 1:
        raise ValueError(f"runs that scored the whole test split scored different numbers of samples: {sorted(whole)}")
    controls = {}
    for entry in entries:
        if entry["method"] == "no_user":
            key = (entry["seed"], entry["ablation"].get("with_text"))
            if key in controls:
                raise ValueError(f"two no-user runs with seed {key[0]} and with_text {key[1]}: "
                                 f"{controls[key]['run']}, {entry['run']}")
            controls[key] = entry
    for entry in entries:
        entry["p_vs_no_user"] = paired_against(entry, controls.get((entry["seed"], entry["ablation"].get("with_text"))))
    for entry in entries:
        entry["run"] = str(Path(entry["run"]).relative_to(root))
    return {"unit": "nats per target token", "resamples": RESAMPLES, "bootstrap_seed": SEED, "runs": entries}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder searched for run directories (metrics.json with a likelihood block)")
    parser.add_argument("--out", help="write the summary JSON here (else print it)")
    args = parser.parse_args(argv)
    text = json.dumps(summarize(Path(args.runs)), indent=2) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
