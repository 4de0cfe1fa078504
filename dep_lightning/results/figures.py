"""Figures as PNG (matplotlib, Agg backend).

* ``figure_k_sweep.png`` (paper figures 2 and 5): DEP runs that vary K with every other
  ablation key at its default; left ROUGE-1 and METEOR, right BLEU, one line per
  category, mean over seeds with the seed std as error bars.
* ``figure_uniqueness.png`` (paper figure 3): per method (the rows of table 1), the
  metrics of the unique and the non-unique half of users from
  ``metrics.json["uniqueness"]`` (all test categories together; the paper showed CDs &
  Vinyl only), mean over seeds with the seed std as error bars.
* ``figure_personalization.png``: per row of the personalization table, the swap gain
  ``NLL(swap) - NLL(true)`` (nats per target token) with its 95% bootstrap interval over
  samples as error bar, and a zero line; written only with that table.

A point or bar from a single seed has no error bar (a seed std needs two seeds) and a note
names it; in the personalization figure the error bar is a bootstrap interval over samples,
which one seed has too, so a one-seed point is drawn hollow and a note names it. A figure
without data is still written, with a note saying what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dep_lightning.results.registry import RunGroup
from dep_lightning.results.tables import (
    METRIC_LABELS,
    SIGNIFICANCE,
    Row,
    Table,
    category_label,
    matches_ablation,
    show_value,
)

UNIQUENESS_METRICS = ("meteor", "rouge1", "bleu")
FULL_NAMES = {"rouge1": "ROUGE-1", "meteor": "METEOR", "bleu": "BLEU"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std over seeds; the std is NaN (drawn as no error bar) for one seed."""
    mean = math.fsum(values) / len(values)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def _single_seed_note(figure: str, labels: Sequence[str]) -> list[str]:
    return [f"{figure}: one seed, no error bar: {', '.join(labels)}"] if labels else []


def k_sweep_groups(groups: Sequence[RunGroup], defaults: dict[str, Any]) -> list[RunGroup]:
    fixed = {k: v for k, v in defaults.items() if k != "k"}
    chosen = [g for g in groups if g.method == "dep" and matches_ablation(g.ablation, fixed)]
    return sorted(chosen, key=lambda g: g.ablation["k"])


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def k_sweep_figure(groups: Sequence[RunGroup], defaults: dict[str, Any], categories: Sequence[str], path: Path
                   ) -> list[str]:
    """Writes the K figure; returns notes (why something is missing)."""
    plt = _pyplot()
    chosen = k_sweep_groups(groups, defaults)
    notes = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if len({g.ablation["k"] for g in chosen}) < 2:
        fixed = ", ".join(f"{k}={show_value(v)}" for k, v in sorted(defaults.items()) if k != "k")
        note = f"fewer than two K values among DEP runs with {fixed or 'any settings'}"
        notes.append(f"figure_k_sweep: {note}")
        if len(chosen) > len({g.ablation["k"] for g in chosen}):
            notes.append("figure_k_sweep: several run groups share a K value (they differ in backbone or data)")
        _empty(left, note)
        _empty(right, note)
    else:
        if len(chosen) > len({g.ablation["k"] for g in chosen}):
            notes.append("figure_k_sweep: several run groups share a K value (they differ in backbone or data); "
                         "all are plotted")
        for axis, metrics in ((left, ("rouge1", "meteor")), (right, ("bleu",))):
            for category in categories:
                for metric, marker in zip(metrics, ("o", "s")):
                    points = [(g.ablation["k"], g.summary(category, metric)) for g in chosen]
                    points = [(k, s) for k, s in points if not isinstance(s, str)]
                    if not points:
                        notes.append(f"figure_k_sweep: no {metric} for {category}")
                        continue
                    ks = [k for k, _ in points]
                    means = [s[0] for _, s in points]
                    # RunGroup.summary gives no std for one seed: no error bar there.
                    stds = [math.nan if s[1] is None else s[1] for _, s in points]
                    axis.errorbar(ks, means, yerr=stds, marker=marker, capsize=3,
                                  label=f"{category_label(category)} {METRIC_LABELS[metric]}")
            axis.set_xlabel("K (retrieved history reviews)")
            axis.set_xticks(sorted({g.ablation["k"] for g in chosen}))
            axis.legend(fontsize=8)
        notes += _single_seed_note("figure_k_sweep", [f"K={g.ablation['k']}" for g in chosen if len(g.runs) < 2])
        left.set_ylabel("ROUGE-1 / METEOR")
        right.set_ylabel("BLEU")
    fig.suptitle("DEP: number of retrieved histories (K)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return notes


def uniqueness_figure(rows: Sequence[Row], path: Path) -> list[str]:
    """Grouped bars: unique vs non-unique users per method, one panel per metric."""
    plt = _pyplot()
    notes, single = [], []
    data: list[tuple[str, dict[str, dict[str, tuple[float, float]]]]] = []
    for row in rows:
        if row.group is None:
            continue
        halves = [run.metrics.get("uniqueness") for run in row.group.runs]
        if any(h is None for h in halves):
            notes.append(f"figure_uniqueness: {row.label}: no uniqueness halves in metrics.json of "
                         + ", ".join(run.source for run, h in zip(row.group.runs, halves) if h is None))
            continue
        values = {}
        for half in ("unique", "non_unique"):
            values[half] = {}
            for metric in UNIQUENESS_METRICS:
                per_seed = [h[half].get(metric) for h in halves]
                if all(v is not None for v in per_seed):
                    values[half][metric] = _mean_std(per_seed)
        data.append((row.label, values))
        if len(halves) < 2:
            single.append(row.label)
    notes += _single_seed_note("figure_uniqueness", single)
    fig, axes = plt.subplots(1, len(UNIQUENESS_METRICS), figsize=(4 * len(UNIQUENESS_METRICS), 4))
    if not data:
        notes.append("figure_uniqueness: no run with uniqueness halves")
        for axis in axes:
            _empty(axis, "no run with uniqueness halves in metrics.json")
    else:
        x = np.arange(len(data))
        for axis, metric in zip(axes, UNIQUENESS_METRICS):
            for offset, half, name in ((-0.2, "unique", "Unique"), (0.2, "non_unique", "Non-Unique")):
                stats = [values[half].get(metric, (np.nan, np.nan)) for _, values in data]
                axis.bar(x + offset, [s[0] for s in stats], width=0.4, yerr=[s[1] for s in stats], capsize=3,
                         label=name)
            axis.set_xticks(x, [label for label, _ in data], rotation=30, ha="right", fontsize=8)
            axis.set_title(FULL_NAMES[metric])
            axis.legend(fontsize=8)
    fig.suptitle("Unique vs non-unique users (all test categories)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return notes


def personalization_figure(table: Table, path: Path) -> list[str]:
    """The swap gain per row of the personalization table with its 95% interval; returns notes."""
    from dep_lightning.results.personalization import swap_gains

    plt = _pyplot()
    from matplotlib.lines import Line2D

    points = swap_gains(table)
    shown = {id(row) for row, _ in points}
    notes = []
    without = [row.label for row in table.rows if id(row) not in shown]
    if without:
        notes.append(f"figure_personalization: no swap gain: {', '.join(without)}")
    no_interval = [row.label for row, cell in points if cell.low is None]
    if no_interval:
        notes.append(f"figure_personalization: no interval: {', '.join(no_interval)}")
    single = [row.label for row, _ in points if row.seeds == 1]
    if single:
        notes.append(f"figure_personalization: one seed (hollow marker; interval over that seed's samples): "
                     f"{', '.join(single)}")
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(points) + 1.6)))
    if not points:
        notes.append("figure_personalization: no row with a swap gain (swap not scored)")
        _empty(ax, "no run scored under the swap condition")
    else:
        labels = []
        for i, (row, cell) in enumerate(points):
            y = len(points) - 1 - i  # table order, top to bottom
            if cell.low is not None:
                ax.plot([cell.low, cell.high], [y, y], color="C0", linewidth=1.5)
                ax.plot([cell.low, cell.high], [y, y], linestyle="none", marker="|", markersize=10, color="C0")
            ax.plot([cell.mean], [y], linestyle="none", marker="o", markersize=7, color="C0",
                    markerfacecolor="C0" if row.seeds and row.seeds > 1 else "white")
            significant = cell.p_value is not None and cell.p_value < SIGNIFICANCE
            labels.append(row.label + (" †" if significant else ""))
        ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(points) - 1, -1, -1), labels, fontsize=8)
        ax.set_ylim(-0.7, len(points) - 0.3)
        ax.set_xlabel("swap gain: NLL(swap) - NLL(true), nats per target token")
        kinds = [("several seeds", "C0")] * any(row.seeds and row.seeds > 1 for row, _ in points) + \
            [("one seed", "white")] * bool(single)
        handles = [Line2D([], [], linestyle="none", marker="o", color="C0", markerfacecolor=face, label=name)
                   for name, face in kinds]
        handles.append(Line2D([], [], color="C0", marker="|", markersize=10, label="95% bootstrap interval"))
        ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_title("Personalization gain (positive: the user's own history helps; † p < 0.05)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return notes
