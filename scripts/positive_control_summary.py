"""Summary of the planted-signal positive control (docs/personalization.md).

For every run directory under RUNS (exported or not): the method, the arm (user_signal),
the likelihood block of metrics.json (n, NLL under true / swap / none, the swap gain with
its 95 % bootstrap interval and paired p-value) and the signature recall of the generated
test outputs: the share whose group signature (sign-off, or opening line for outputs cut
before their end) is the user's own group's, and the share with another group's; and the
looser ``name_recall``: the same shares for the first group name the output mentions. The
user's group is the generator's assignment (``synthetic.style_groups_of``), the same in
both arms; in the null arm users do not write consistently in it. Runs analysed by
scripts/opener_choice.py (``analysis/opener_choice.json``) also get its forced-choice opener
recall under true and swap prompts (``opener_choice``).

    python scripts/positive_control_summary.py docs/results/positive_control/runs --out summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from dep_lightning.data.signatures import group_name_of, signature_of
from dep_lightning.data.sources import EmbeddedSource
from dep_lightning.data.synthetic import style_groups_of


def signature_recall(rows: list[dict], groups: dict[str, str], field: str,
                     read=lambda text: signature_of(text, openers=True)) -> dict[str, float | int]:
    own = other = 0
    for row in rows:
        found = read(row[field])
        own += found is not None and found == groups[row["user_id"]]
        other += found is not None and found != groups[row["user_id"]]
    n = len(rows)
    return {"n": n, "own": own / n if n else 0.0, "other": other / n if n else 0.0}


def summarize_run(folder: Path) -> dict:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    source = config["data"]["init_args"]["source"]["init_args"]
    groups = style_groups_of(EmbeddedSource(**source).config())
    model = config["model"]["init_args"]
    overall = metrics["likelihood"]["overall"]
    swap = overall["gains"]["swap"]
    out = {
        "run": folder.name, "method": manifest["method"], "user_signal": source.get("user_signal", 1.0),
        "input_norm": model.get("input_norm", "none"), "prompt_norm": model.get("prompt_norm", "none"),
        "n": overall["n"], "nll_true": overall["nll_true"], "nll_swap": overall["nll_swap"],
        "nll_none": overall.get("nll_none"), "gain": swap["gain"], "gain_ci95": swap["gain_ci95"],
        "p_value": swap["p_value"], "diagnostics": metrics.get("diagnostics"),
    }
    choice = folder / "analysis" / "opener_choice.json"
    if choice.is_file():  # scripts/opener_choice.py: the per-sample details stay in that file
        found = json.loads(choice.read_text())
        out["opener_choice"] = {condition: found[condition] for condition in ("true", "swap")}
    predictions = folder / "predictions" / "test.jsonl"
    if predictions.is_file():
        rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
        out["signature_recall"] = signature_recall(rows, groups, "prediction")
        out["signature_recall_reference"] = signature_recall(rows, groups, "reference")
        out["name_recall"] = signature_recall(rows, groups, "prediction", group_name_of)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder searched for run directories (metrics.json with a likelihood block)")
    parser.add_argument("--out", help="write the summary JSON here")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in Path(args.runs).rglob("metrics.json")
                     if "likelihood" in json.loads(p.read_text()))
    if not folders:
        raise SystemExit(f"no run with a likelihood block under {args.runs}")
    summary = {"runs": [summarize_run(folder) for folder in folders]}
    text = json.dumps(summary, indent=2) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    header = (f"{'run':28s} {'n':>4s} {'NLL true':>9s} {'NLL swap':>9s} {'gain':>8s} {'95% CI':>20s} {'p':>7s} "
              f"{'own':>5s} {'other':>6s} {'name own':>9s} {'other':>6s} {'opener own':>10s} {'const':>6s} "
              f"{'swap own':>8s} {'follows':>7s}")
    print(header)
    for r in summary["runs"]:
        recall, names = r.get("signature_recall", {}), r.get("name_recall", {})
        ci = f"[{r['gain_ci95'][0]:+.4f}, {r['gain_ci95'][1]:+.4f}]"
        print(f"{r['run']:28s} {r['n']:4d} {r['nll_true']:9.4f} {r['nll_swap']:9.4f} {r['gain']:+8.4f} {ci:>20s} "
              f"{r['p_value']:7.4f} {recall.get('own', float('nan')):5.2f} {recall.get('other', float('nan')):6.2f} "
              f"{names.get('own', float('nan')):9.2f} {names.get('other', float('nan')):6.2f} "
              + opener_columns(r.get("opener_choice")))


def opener_columns(choice: dict | None) -> str:
    """Forced-choice opener recall: own (true prompts), the constant chooser's share, own and
    the swapped-in user's group (swap prompts); blanks without an opener_choice analysis."""
    if choice is None:
        return f"{'':>10s} {'':>6s} {'':>8s} {'':>7s}"
    true, swap = choice["true"], choice["swap"]
    return f"{true['own']:10.2f} {true['constant_best']:6.2f} {swap['own']:8.2f} {swap['swap_follows']:7.2f}"


if __name__ == "__main__":
    main()
