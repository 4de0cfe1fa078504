"""The personalization table: how much a method's likelihood of the test references depends
on the user's own history (``dep-lightning score``, ``dep_lightning/scoring.py``).

One row per run group (runs that differ only in seed) with a ``likelihood`` block in
``metrics.json`` -- a run scored after fitting, or a score-only run directory of
``dep-lightning score``; runs without one are left out, and the table exists only when
some run has one. Columns, for every condition scored by some row, in the order of
``data/conditions.py`` (true, swap, none, his_only, diff_only):

* ``NLL <condition>``: the mean over samples of the reference's NLL per target token
  (nats), mean ± sample std over seeds;
* ``<condition> - true``: the gain, ``NLL(condition) - NLL(true)`` per sample, its mean
  over samples, mean ± std over seeds; with its 95% percentile bootstrap interval and a
  two-sided paired bootstrap test against ``true`` (``†`` for p < 0.05).

Intervals and tests are recomputed from ``scores/test.jsonl``: per sample id the NLL per
token is averaged over the group's seeds (over the ids every seed scored), then resampled
with ``results/stats.py`` exactly as ``scoring.gain_summary`` does for one run. A single
run without ``scores/test.jsonl`` shows the interval and p-value recorded in its
``metrics.json``; several such seeds have no interval (a cell note says why).
"""

from __future__ import annotations

from typing import Any, Sequence

from dep_lightning.data.conditions import CONDITIONS
from dep_lightning.results.registry import SCORES, Run, RunGroup, group_runs, seed_statistics
from dep_lightning.results.stats import MetricSamples, bootstrap_ci, paired_bootstrap
from dep_lightning.results.tables import (
    SIGNIFICANCE,
    Cell,
    Options,
    Row,
    Table,
    _rows_for,
    matches_ablation,
    method_label,
    method_order,
)

NAME = "personalization"
TITLE = "Personalization: likelihood of the reference with the user's own history and without it"
CAPTION = ("NLL: teacher-forced negative log-likelihood of each test reference in nats per target token, mean over "
           "samples, with the user's own history (true), another user's (swap), no history (none), or DEP's his / "
           "diff slots alone (his_only / diff_only). X - true: the gain, NLL(X) - NLL(true) per sample, mean over "
           "samples; positive when the user's own history makes the reference more likely. [a, b]: 95% bootstrap "
           "interval of the gain. Lower NLL is better; not ranked.")


def scored_groups(runs: Sequence[Run]) -> list[tuple[RunGroup, list[str]]]:
    """The runs with a likelihood block grouped by configuration (as every table groups runs),
    each group with the sources of the runs of its configuration that have none."""
    unscored: dict[str, list[str]] = {}
    for run in runs:
        if run.likelihood is None:
            unscored.setdefault(run.group_key, []).append(run.source)
    groups = group_runs(run for run in runs if run.likelihood is not None)
    return [(group, unscored.get(group.first.group_key, [])) for group in groups]


def _conditions(groups: Sequence[RunGroup]) -> list[str]:
    found = {c for group in groups for run in group.runs for c in run.likelihood["conditions"]}
    return [c for c in CONDITIONS if c in found]


def _rows(pairs: Sequence[tuple[RunGroup, list[str]]], defaults: dict[str, Any]) -> tuple[list[Row], list[str]]:
    """Rows in table 1's method order; a method with several groups gets one row per group,
    labelled by what differs, the group with most ablation keys at the defaults first."""
    groups = [group for group, _ in pairs]
    unscored = {id(group): missing for group, missing in pairs}
    rows: list[Row] = []
    notes: list[str] = []
    for method in method_order(g.method for g in groups):
        own = [g for g in groups if g.method == method]
        own.sort(key=lambda g: (-sum(matches_ablation(g.ablation, {k: v}) for k, v in defaults.items()),
                                g.first.source))
        for row in _rows_for(method_label(method), method, own, ""):
            rows.append(row)
            missing = unscored[id(row.group)]
            if missing:
                notes.append(f"{row.label}: {len(missing)} run(s) of this configuration without a likelihood "
                             f"block, not in this row: {', '.join(missing)}")
            if len(set(row.group.seeds)) < len(row.group.seeds):
                notes.append(f"{row.label}: runs with the same seed counted separately: "
                             f"{', '.join(row.group.sources)}")
    return rows, notes


def _overall(run, condition: str, gain: bool) -> float | None:
    block = run.likelihood["overall"]
    if gain:
        value = (block.get("gains") or {}).get(condition, {}).get("gain")
    else:
        value = block.get(f"nll_{condition}")
    return None if value is None else float(value)


def _summary(group: RunGroup, condition: str, gain: bool) -> tuple[float, float | None, int] | str:
    """(mean, std over seeds or None, seeds) of a run group's overall NLL or gain, or why there is none."""
    values = [_overall(run, condition, gain) for run in group.runs]
    present = [v for v in values if v is not None]
    what = f"{condition} gain" if gain else f"NLL {condition}"
    if not present:
        scored = "; ".join(f"{run.source}: {', '.join(run.likelihood['conditions'])}" for run in group.runs)
        return f"no {what} in the likelihood block (conditions scored: {scored})"
    if len(present) < len(values):
        missing = [run.source for run, v in zip(group.runs, values) if v is None]
        return f"{what} missing in some seeds of the group: {', '.join(missing)}"
    return seed_statistics(present)


def _recorded(cell: Cell, group: RunGroup, condition: str, why: str) -> None:
    """The interval and p-value of a single run's metrics.json, or a note on why there is none."""
    if len(group.runs) > 1:
        cell.note = f"{why}; no interval for several seeds"
        return
    recorded = group.first.likelihood["overall"]["gains"][condition]
    cell.low, cell.high = (float(v) for v in recorded["gain_ci95"])
    cell.p_value = float(recorded["p_value"])
    cell.ci_n = recorded.get("n")
    cell.note = f"{why}; interval and p-value as recorded in metrics.json"


def _fill(row: Row, columns: Sequence[tuple[None, str]], options: Options) -> None:
    group = row.group
    row.cells = []
    for _, metric in columns:
        gain = metric.startswith("gain_")
        condition = metric.split("_", 1)[1]
        summary = _summary(group, condition, gain)
        if isinstance(summary, str):
            row.cells.append(Cell(empty=summary))
            continue
        cell = Cell(mean=summary[0], std=summary[1], seeds=summary[2])
        row.cells.append(cell)
        if not options.intervals:
            if gain:
                _recorded(cell, group, condition, "intervals not recomputed")
            continue
        per_sample = group.per_sample_likelihood(["true", condition] if gain else [condition])
        if isinstance(per_sample, str):
            if gain:
                _recorded(cell, group, condition, per_sample)
            else:
                cell.note = per_sample
            continue
        _, values = per_sample
        if gain:
            interval = bootstrap_ci(MetricSamples("gain", values[condition] - values["true"]), options.resamples,
                                    options.seed)
            test = paired_bootstrap(MetricSamples("nll", values[condition]), MetricSamples("nll", values["true"]),
                                    options.resamples, options.seed)
            cell.p_value = test.p_value
        else:
            interval = bootstrap_ci(MetricSamples("nll", values[condition]), options.resamples, options.seed)
        cell.low, cell.high, cell.ci_n = interval.low, interval.high, interval.n


def personalization_table(runs: Sequence[Run], defaults: dict[str, Any], options: Options) -> Table | None:
    """The personalization table of all runs (score-only ones included), filled; None when no
    run has a likelihood block. ``defaults`` orders a method's groups (closest first)."""
    pairs = scored_groups(runs)
    if not pairs:
        return None
    conditions = _conditions([group for group, _ in pairs])
    columns = [(None, f"nll_{c}") for c in conditions]
    if "true" in conditions:
        columns += [(None, f"gain_{c}") for c in conditions if c != "true"]
    rows, notes = _rows(pairs, defaults)
    table = Table(NAME, TITLE, CAPTION, columns, rows, ranked=False, tested=False, p_reference="true")
    table.notes.append("unit: nats per target token (each reference's NLL divided by its token count, then "
                       "averaged over samples); cells: mean ± sample std over seeds of metrics.json's likelihood "
                       "block")
    if options.intervals:
        table.notes.append(f"[a, b]: 95% percentile bootstrap interval of the mean gain; † p < {SIGNIFICANCE}: "
                           f"two-sided paired bootstrap of the condition against true; both over the samples of "
                           f"{SCORES} with each sample's NLL averaged over the row's seeds first "
                           f"({options.resamples} resamples, seed {options.seed}); no multiple-comparison correction")
    else:
        table.notes.append(f"intervals not recomputed: one-seed rows show the interval and p-value recorded in "
                           f"metrics.json († p < {SIGNIFICANCE})")
    table.notes += notes
    table.notes.append("rows: every run group with a likelihood block (`dep-lightning score`), seeds averaged; a "
                       "method with several groups has one row per group, labelled by what differs")
    for row in rows:
        _fill(row, columns, options)
    return table


def swap_gains(table: Table) -> list[tuple[Row, Cell]]:
    """(row, swap-gain cell) of every row with a swap gain, in table order."""
    if (None, "gain_swap") not in table.columns:
        return []
    column = table.columns.index((None, "gain_swap"))
    return [(row, row.cells[column]) for row in table.rows if row.cells[column].mean is not None]

