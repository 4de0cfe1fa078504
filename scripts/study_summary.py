"""Summary of the real-data study, second edition (docs/results.md; written by ``make study``).

For every scored run under RUNS (a ``metrics.json`` with a likelihood block, exported or not),
one entry: the method and its ablation keys, the seed, the number of scored test samples
``n`` and ``whole_split`` (the run's ``data.init_args.score_limit`` was null, so ``n`` is the
test split's size; every such run must have the same ``n``), the mean NLL per target token under each
scored condition, the swap gain (NLL(swap) - NLL(true) per sample) with its 95 % bootstrap
interval and paired p-value, and paired bootstrap p-values of the run's per-sample NLL(true)
against a reference run's (None where that run is missing or is the run itself):

* ``p_vs_no_user``: the trained no-user control with the same seed and the same ``with_text``;
* ``p_vs_rag``: RAG (untrained; its one run);
* ``p_vs_dep``: DEP as the study trains it (his+diff, SAE) with the same seed and ``with_text``,
  for the table 2 / 3 variants and PPlug.

and the paired difference of the per-sample swap gains against the same references,
``gain_vs_no_user`` and ``gain_vs_dep``: ``{"delta", "ci95", "p_value"}``, where ``delta`` is the
mean over samples of (the run's NLL(swap) - NLL(true)) - (the reference's), i.e. how much more
(positive) of the swap gain the run shows than the reference, with its 95 % bootstrap interval
and paired p-value (None where the reference is missing or is the run itself).

Then the training steps, from the run's logged metrics (Lightning labels a row with the
optimizer steps done before it, so a validation after N steps reads N - 1): ``steps``, the
optimizer steps trained (the step of the rows the test after fit logs; else the last
training or validation row + 1), ``best_step`` and ``best_val_nll``, where ``val/nll`` was best,
and ``val_curve``, every validation as [steps, val/nll]. ``timing`` sums the run's
``timing.jsonl`` (callbacks/clock.py): training seconds per optimizer step, seconds per
validation, and the test (generation) and scoring seconds per sample, with the threads and CPU;
where recorded, the fit's wall and CPU seconds side by side (a pause shows as a gap).

``comparisons`` pairs the study's runs of one seed and text setting (:data:`COMPARISONS`: DEP
against the no-user control, RAG, its table 2 / 3 variants and PPlug; his against diff): the
difference A - B of NLL(true) and of the swap gain, each with its interval and p-value;
``--table`` writes them as Markdown (docs/results/v2/comparisons.md).

    python scripts/study_summary.py docs/results/v2/runs --out docs/results/v2/summary.json \
        --figure docs/results/v2/figure_learning_curve.png --table docs/results/v2/comparisons.md
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml

from dep_lightning.callbacks.clock import read_timing
from dep_lightning.results.stats import MetricSamples, bootstrap_ci, paired_bootstrap
from dep_lightning.scoring import aligned

RESAMPLES, SEED = 1000, 0


def per_token(folder: Path) -> dict[str, dict[str, float]]:
    """condition -> sample id -> NLL per target token (scores/test.jsonl, read once)."""
    rows = [json.loads(line) for line in (folder / "scores" / "test.jsonl").read_text().splitlines() if line.strip()]
    conditions = sorted({r["condition"] for r in rows})
    ids, by = aligned(rows, conditions)
    return {c: {i: r["nll"] / max(1, r["tokens"]) for i, r in zip(ids, by[c])} for c in conditions}


def training_steps(folder: Path, lines: list[dict]) -> dict:
    """Optimizer steps trained, the best ``val/nll`` and where, and the validation curve
    (``lines``: the run's ``read_timing``, callbacks/clock.py)."""
    log = folder / "metrics-fit.csv"
    if not log.is_file():
        log = folder / "metrics.csv"
    if not log.is_file():
        return {"steps": None, "best_step": None, "best_val_nll": None, "val_curve": []}
    with log.open() as handle:
        rows = [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]
    tested = [int(r["step"]) for r in rows if any(k.startswith("test/") for k in r)]
    trained = [int(r["step"]) + 1 for r in rows if any(k.startswith("train/") for k in r)]
    values = [float(r["val/nll"]) for r in rows if "val/nll" in r]
    # The steps done at each validation: exact from timing.jsonl (a line per validation with its
    # global step); else the row's label + 1, exact when the validating batch stepped (one step
    # early when it only accumulated: Lightning labels that validation with the count itself).
    at = validation_steps(lines)
    if len(at) != len(values):
        at = [int(r["step"]) + 1 for r in rows if "val/nll" in r]
    curve = [[step, value] for step, value in zip(at, values)]
    best = min(curve, key=lambda point: point[1]) if curve else [None, None]
    steps = max(tested) if tested else (max(trained) if trained else None)
    return {"steps": steps, "best_step": best[0], "best_val_nll": best[1], "val_curve": curve}


def validation_steps(lines: list[dict]) -> list[int]:
    """The global step of every validation in the timing lines, in order."""
    return [t["global_step"] for t in lines if t["stage"] == "fit" and t.get("validations") and "global_step" in t]


def timing(lines: list[dict]) -> dict | None:
    """The run's stages' wall time (its ``read_timing`` lines), per optimizer step and per sample."""
    if not lines:
        return None
    fits = [t for t in lines if t["stage"] == "fit"]
    steps, train = sum(t["steps"] for t in fits), sum(t["train_seconds"] for t in fits)
    validations, validating = sum(t["validations"] for t in fits), sum(t["validation_seconds"] for t in fits)
    out = {"steps_timed": steps, "seconds_per_step": round(train / steps, 3) if steps else None,
           "validations": validations,
           "seconds_per_validation": round(validating / validations, 1) if validations else None}
    # CPU time of the fit (training and validation together), where every segment has it: a
    # paused or crowded process shows wall seconds well above CPU seconds / threads.
    if fits and all("cpu_seconds" in t for t in fits):
        out["fit_cpu_seconds"] = round(sum(t["cpu_seconds"] for t in fits), 1)
        out["fit_seconds"] = round(sum(t["seconds"] for t in fits), 1)
    for stage in ("test", "score"):
        found = [t for t in lines if t["stage"] == stage]
        if found:
            seconds, samples = sum(t["seconds"] for t in found), sum(t["samples"] for t in found)
            out[f"{stage}_seconds"] = round(seconds, 1)
            out[f"{stage}_seconds_per_sample"] = round(seconds / samples, 3) if samples else None
            # Batches scored by an interrupted run or by another run (shared): their seconds are not in these.
            for field in ("batches_restored", "batches_shared"):
                count = sum(t.get(field, 0) for t in found)
                if count:
                    out[f"{stage}_{field}"] = count
    out["threads"] = sorted({t["threads"] for t in lines})
    out["cpu"] = sorted({t["cpu"] for t in lines})
    return out


def summarize_run(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    likelihood = json.loads((folder / "metrics.json").read_text())["likelihood"]
    overall = likelihood["overall"]
    swap = overall["gains"].get("swap", {})
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    limit = ((config.get("data") or {}).get("init_args") or {}).get("score_limit")
    lines = read_timing(folder)
    entry = {
        "run": str(folder), "method": manifest["method"], "ablation": manifest.get("ablation", {}),
        "options": manifest.get("options", {}), "seed": manifest.get("seed"), "n": overall["n"],
        "whole_split": bool(config) and limit is None,
        **{f"nll_{c}": overall[f"nll_{c}"] for c in likelihood["conditions"]},
        "gain": swap.get("gain"), "gain_ci95": swap.get("gain_ci95"), "p_value": swap.get("p_value"),
        "gains": {c: {k: g[k] for k in ("gain", "gain_ci95", "p_value")} for c, g in overall["gains"].items()},
        **training_steps(folder, lines),
        "timing": timing(lines),
    }
    return entry


class Paired:
    """Paired differences between runs on the same samples, for one summary: each run's scores
    are read once and each (run, reference, quantity) is computed once.

    Quantities: ``nll_true`` (per-token NLL under ``true``) and ``gain`` (NLL(swap) - NLL(true));
    a difference is the mean over samples of the run's value minus the reference's, its 95 %
    bootstrap interval and paired bootstrap p-value."""

    def __init__(self):
        self._scores: dict[str, dict[str, dict[str, float]]] = {}
        self._done: dict[tuple[str, str, str], dict] = {}

    def values(self, run: str, quantity: str) -> dict[str, float]:
        if run not in self._scores:
            self._scores[run] = per_token(Path(run))
        scores = self._scores[run]
        if quantity == "nll_true":
            return scores["true"]
        return {i: scores["swap"][i] - nll for i, nll in scores["true"].items()}

    def difference(self, entry: dict, reference: dict, quantity: str) -> dict:
        key = (entry["run"], reference["run"], quantity)
        if key not in self._done:
            mine, theirs = self.values(entry["run"], quantity), self.values(reference["run"], quantity)
            if sorted(mine) != sorted(theirs):
                raise ValueError(f"{entry['run']} and {reference['run']} scored different samples")
            ids = sorted(mine)
            x, y = np.array([mine[i] for i in ids]), np.array([theirs[i] for i in ids])
            interval = bootstrap_ci(MetricSamples("delta", x - y), RESAMPLES, SEED)
            test = paired_bootstrap(MetricSamples("value", x), MetricSamples("value", y), RESAMPLES, SEED)
            self._done[key] = {"delta": float(np.mean(x - y)), "ci95": [interval.low, interval.high],
                               "p_value": test.p_value}
        return self._done[key]

    def p_value(self, entry: dict, reference: dict | None) -> float | None:
        """Paired p-value of the run's NLL(true) against ``reference``'s (None: no reference, or itself)."""
        if reference is None or reference is entry:
            return None
        return self.difference(entry, reference, "nll_true")["p_value"]

    def gain(self, entry: dict, reference: dict | None) -> dict | None:
        """The run's swap gain minus ``reference``'s (None: no reference, itself, or no swap scores)."""
        if reference is None or reference is entry or "swap" not in entry["gains"] or "swap" not in reference["gains"]:
            return None
        return self.difference(entry, reference, "gain")


#: The study's paired comparisons (docs/results.md), A against B: the role names of :func:`role`.
COMPARISONS = [("dep", "no_user"), ("dep", "rag"), ("dep", "his"), ("dep", "diff"), ("his", "diff"),
               ("dep", "ae"), ("dep", "no_refinement"), ("dep", "pplug")]
ROLE_LABELS = {"dep": "DEP (his+diff, SAE)", "no_user": "no-user control", "rag": "RAG", "his": "DEP his (SAE)",
               "diff": "DEP diff (SAE)", "ae": "DEP AE (his+diff)", "no_refinement": "DEP no refinement (his+diff)",
               "pplug": "PPlug"}


def role(entry: dict) -> str | None:
    """The run's part in :data:`COMPARISONS`: DEP and its table 2 / 3 variants, the no-user
    control, RAG, PPlug; None for any other run."""
    method, ablation = entry["method"], entry["ablation"]
    if method == "dep":
        embeddings, refinement = ablation.get("embeddings"), ablation.get("refinement")
        if refinement == "sae":
            return {"his+diff": "dep", "his": "his", "diff": "diff"}.get(embeddings)
        if embeddings == "his+diff":
            return {"ae": "ae", "none": "no_refinement"}.get(refinement)
        return None
    return method if method in ("no_user", "rag", "pplug") else None


def comparisons(by_role: dict[str, dict[tuple, dict]], rag: dict | None, paired: Paired) -> list[dict]:
    """Every comparison of :data:`COMPARISONS` whose two runs exist, per seed and text setting
    (``by_role``: role -> (seed, with_text) -> run; RAG, untrained and shown the reviews' text,
    has one run: it is B for every setting): NLL(true) of A minus B and swap gain of A minus B,
    each with its interval and p-value."""
    keys = sorted({key for runs in by_role.values() for key in runs},
                  key=lambda k: (k[0] if k[0] is not None else -1, bool(k[1])))
    out = []
    for key in keys:
        found = {name: runs[key] for name, runs in by_role.items() if key in runs}
        if rag is not None:
            found["rag"] = rag
        for a, b in COMPARISONS:
            if a in found and b in found:
                out.append({"seed": key[0], "with_text": key[1], "a": a, "b": b,
                            "a_run": found[a]["run"], "b_run": found[b]["run"], "n": found[a]["n"],
                            "nll_true": paired.difference(found[a], found[b], "nll_true"),
                            "gain": paired.gain(found[a], found[b])})
    return out


def comparisons_table(summary: dict) -> str:
    """Markdown table of the summary's ``comparisons``."""
    def cell(block):
        if block is None:
            return "—"
        return f"{block['delta']:+.4f} [{block['ci95'][0]:+.4f}, {block['ci95'][1]:+.4f}], p = {block['p_value']:.3f}"

    lines = ["| seed | review text | A | B | n | NLL(true), A − B | swap gain, A − B |",
             "|---:|---|---|---|---:|---|---|"]
    for c in summary["comparisons"]:
        text = {True: "with", False: "without", None: "—"}[c["with_text"]]
        lines.append(f"| {c['seed']} | {text} | {ROLE_LABELS[c['a']]} | {ROLE_LABELS[c['b']]} | {c['n']} | "
                     f"{cell(c['nll_true'])} | {cell(c['gain'])} |")
    lines.append("")
    lines.append(f"Nats per target token, mean over the paired test samples; 95 % bootstrap intervals and "
                 f"two-sided paired bootstrap p-values ({summary['resamples']} resamples, seed "
                 f"{summary['bootstrap_seed']}; the smallest p they can give is "
                 f"1/{summary['resamples'] + 1} = {1 / (summary['resamples'] + 1):.3f}). NLL(true) below 0: A fits "
                 f"the references better; swap gain above 0: A depends more on the user's own history. "
                 f"Written by scripts/study_summary.py.")
    return "\n".join(lines) + "\n"


def is_study_dep(entry: dict) -> bool:
    """DEP as the study trains it: his+diff slots, SAE refinement."""
    return role(entry) == "dep"


def by_seed_and_text(entries: list[dict], chosen, what: str) -> dict[tuple, dict]:
    """(seed, with_text) -> the one chosen run; two for one key is an error."""
    found: dict[tuple, dict] = {}
    for entry in entries:
        if chosen(entry):
            key = (entry["seed"], entry["ablation"].get("with_text"))
            if key in found:
                raise ValueError(f"two {what} with seed {key[0]} and with_text {key[1]}: {found[key]['run']}, "
                                 f"{entry['run']}")
            found[key] = entry
    return found


def summarize(root: Path) -> dict:
    folders = sorted(p.parent for p in root.rglob("metrics.json") if "likelihood" in json.loads(p.read_text()))
    if not folders:
        raise SystemExit(f"no run with a likelihood block under {root}")
    entries = [summarize_run(folder) for folder in folders]
    whole = {e["n"] for e in entries if e["whole_split"]}
    if len(whole) > 1:
        raise ValueError(f"runs that scored the whole test split scored different numbers of samples: {sorted(whole)}")
    # role -> (seed, with_text) -> its one run (RAG has one run in all, below).
    what = {"no_user": "no-user runs", "dep": "DEP (his+diff, SAE) runs"}
    by_role = {name: by_seed_and_text(entries, lambda e, name=name: role(e) == name,
                                      what.get(name, f"runs of {ROLE_LABELS[name]}"))
               for name in ROLE_LABELS if name != "rag"}
    controls, dep = by_role["no_user"], by_role["dep"]
    rag = [e for e in entries if e["method"] == "rag"]
    if len(rag) > 1:
        raise ValueError(f"two RAG runs: {', '.join(e['run'] for e in rag)}")
    rag = rag[0] if rag else None
    paired = Paired()
    for entry in entries:
        key = (entry["seed"], entry["ablation"].get("with_text"))
        against_dep = entry["method"] in ("dep", "pplug")
        entry["p_vs_no_user"] = paired.p_value(entry, controls.get(key))
        entry["p_vs_rag"] = paired.p_value(entry, rag)
        entry["p_vs_dep"] = paired.p_value(entry, dep.get(key)) if against_dep else None
        entry["gain_vs_no_user"] = paired.gain(entry, controls.get(key))
        entry["gain_vs_dep"] = paired.gain(entry, dep.get(key)) if against_dep else None
    pairs = comparisons(by_role, rag, paired)
    for entry in entries:
        entry["run"] = str(Path(entry["run"]).relative_to(root))
    for pair in pairs:
        pair["a_run"], pair["b_run"] = (str(Path(pair[k]).relative_to(root)) for k in ("a_run", "b_run"))
    return {"unit": "nats per target token", "resamples": RESAMPLES, "bootstrap_seed": SEED, "runs": entries,
            "comparisons": pairs}


def learning_curve_figure(summary: dict, path: Path) -> None:
    """Validation NLL against optimizer steps: DEP (his+diff, SAE) and the trained no-user control,
    one panel without and one with review text, a line per seed; a dot marks the best step."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = {"dep": "tab:blue", "no_user": "tab:orange"}
    labels = {"dep": "DEP (his+diff, SAE)", "no_user": "no-user control"}
    styles = ["-", "--", ":"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, with_text in zip(axes, (False, True)):
        drawn = 0
        for entry in sorted(summary["runs"], key=lambda e: (e["method"], e["seed"])):
            ablation = entry["ablation"]
            if entry["method"] not in colors or ablation.get("with_text") != with_text or not entry["val_curve"]:
                continue
            if entry["method"] == "dep" and not is_study_dep(entry):
                continue
            steps, values = zip(*entry["val_curve"])
            ax.plot(steps, values, styles[entry["seed"] % len(styles)], color=colors[entry["method"]], marker=".",
                    label=f"{labels[entry['method']]}, seed {entry['seed']}")
            ax.plot([entry["best_step"]], [entry["best_val_nll"]], "o", color=colors[entry["method"]])
            drawn += 1
        ax.set_title(f"{'with' if with_text else 'without'} review text")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no run yet", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("validation NLL (nats per target token)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder searched for run directories (metrics.json with a likelihood block)")
    parser.add_argument("--out", help="write the summary JSON here (else print it)")
    parser.add_argument("--figure", help="draw the validation NLL of DEP and the no-user control here (PNG)")
    parser.add_argument("--table", help="write the paired comparisons here (Markdown)")
    args = parser.parse_args(argv)
    summary = summarize(Path(args.runs))
    text = json.dumps(summary, indent=2) + "\n"
    if args.figure:
        learning_curve_figure(summary, Path(args.figure))
        print(f"wrote {args.figure}")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(comparisons_table(summary))
        print(f"wrote {args.table}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
