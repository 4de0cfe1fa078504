"""Markdown summary of `dep-lightning tables` CSV output: means with 95 % bootstrap
intervals and the paired-test p-values against each reference, one table per paper table.

    python scripts/results_summary.py docs/results/tables/table1.csv docs/results/tables/vs_rag/table1.csv

Each CSV comes from one `dep-lightning tables --reference …` run over the same runs; rows
are matched by (table, row) and the p-value columns are named after each file's reference.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict


def read(path: str):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def fmt(value: str, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}" if value not in ("", None) else "—"


def summary(paths: list[str]) -> str:
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    p_values: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    order: list[tuple[str, str]] = []
    metrics: dict[str, list[str]] = defaultdict(list)
    references = []
    for path in paths:
        rows = read(path)
        reference = next((r["reference"] for r in rows if r["reference"]), None) or path
        references.append(reference)
        for r in rows:
            key = (r["table"], r["row"])
            if key not in cells:
                order.append(key)
            if r["metric"] not in metrics[r["table"]]:
                metrics[r["table"]].append(r["metric"])
            cells[key].setdefault(r["metric"], r)
            p_values[(*key, r["metric"])][reference] = r["p_value"]
    out = []
    for table in dict.fromkeys(t for t, _ in order):
        names = metrics[table]
        header = ["row", "seeds", *[f"{m} [95 % CI]" for m in names],
                  *[f"p {m} vs {ref}" for ref in references for m in names]]
        out += [f"**{table}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key in (k for k in order if k[0] == table):
            first = next(iter(cells[key].values()))
            if all(c["mean"] == "" for c in cells[key].values()):
                continue  # no run for this row
            values = [f"{fmt(c['mean'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]" if c["mean"] else "—"
                      for c in (cells[key].get(m, {"mean": ""}) for m in names)]
            ps = [fmt(p_values[(*key, m)].get(ref, ""), 3) for ref in references for m in names]
            out.append("| " + " | ".join([key[1], first["seeds"] or "—", *values, *ps]) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(summary(sys.argv[1:]))
