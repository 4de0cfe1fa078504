"""The paper's tables built from a :class:`~dep_lightning.results.registry.Registry`.

Definitions (docs/tables.md has the full text):

* ``table1`` -- methods x categories x (R-1, MET., BL.[, BS.]); one row per method, the
  run group of that method closest to the ablation defaults; rows, labels and order come
  from the registry of methods (``dep_lightning/methods.py``), where the copy baselines
  are reference rows (shown, never ranked); a method of some run that is not registered
  gets a row after the registered ones, labelled by its name.
* ``table2`` / ``table6`` -- DEP embeddings his / diff / his+diff, without and with review
  text, plus the Non-Perso row; table 2 shows METEOR per category, table 6 R-1 / MET. /
  BL. per category (the paper's table 2 is the METEOR part of its table 6).
* ``table3`` / ``table7`` -- refinement none ("w/o DR") / ae / sae; METEOR, resp. R-1 /
  MET. / BL. per category.
* ``table8`` -- retriever random / bm25 / embedding / recency (DEP runs; the paper ran
  this comparison with RAG on a 32B backbone).
* ``table9`` -- guidance off / on and the difference.
* ``hygiene`` -- copy rate, mean longest copy, limit rate, echo rate per method (overall).
* ``personalization`` -- per run group with a ``likelihood`` block (``dep-lightning
  score``): NLL per condition and each condition's gain over ``true`` with its 95%
  interval and paired test (``personalization.py``); only when some run has the block.

An ablation row holds the DEP run group whose table keys have the row's values and whose
every other ablation key has its default: the value most common among DEP runs (ties:
the paper's setting, else the smallest value), unless overridden. Cells are mean ± sample
std over seeds of ``metrics.json`` values; 95% bootstrap intervals and a paired
bootstrap test against the table's reference row come from per-sample predictions.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from dep_lightning import methods
from dep_lightning.axes import BY_KEY as AXES
from dep_lightning.data.conditions import CONDITIONS
from dep_lightning.results.registry import HYGIENE_METRICS, Registry, RunGroup
from dep_lightning.results.stats import bootstrap_ci, paired_bootstrap

METRIC_LABELS = {"rouge1": "R-1", "meteor": "MET.", "bleu": "BL.", "bertscore": "BS.", "copy_rate": "copy rate",
                 "mean_longest_copy": "mean longest copy", "limit_rate": "limit rate", "echo_rate": "echo rate"}
# The personalization table: mean NLL per condition and each condition's gain over "true".
METRIC_LABELS.update({f"nll_{c}": f"NLL {c}" for c in CONDITIONS})
METRIC_LABELS.update({f"gain_{c}": f"{c} - true [95% CI]" for c in CONDITIONS if c != "true"})
PAPER_CATEGORIES = ("Books", "Movies_and_TV", "CDs_and_Vinyl")
THREE_METRICS = ("rouge1", "meteor", "bleu")
SIGNIFICANCE = 0.05
EMPTY = "—"


def table_methods() -> tuple[str, ...]:
    """The methods of table 1's ranked rows, in order (the registry's ``method`` rows)."""
    return methods.registered().names("method")


def reference_methods() -> tuple[str, ...]:
    """The methods of table 1's reference rows (shown, never ranked), in order."""
    return methods.registered().names("reference")


def method_label(method: str) -> str:
    """A method's row label: its registered label, else its name."""
    spec = methods.registered().get(method)
    return spec.label if spec is not None else method


def method_order(present: Iterable[str]) -> list[str]:
    """The methods ``present`` in table 1's order: ranked rows, the methods no spec
    declares (by name), reference rows."""
    present = set(present)
    ranked, reference = table_methods(), reference_methods()
    return ([m for m in ranked if m in present] + sorted(present - set(ranked) - set(reference))
            + [m for m in reference if m in present])


def __getattr__(name: str) -> Any:
    """``METHODS``, ``REFERENCE_METHODS`` and ``METHOD_LABELS``, read from the registry when
    asked for (reading it imports the model classes, which importing this module does not)."""
    derived = {"METHODS": table_methods, "REFERENCE_METHODS": reference_methods,
               "METHOD_LABELS": lambda: methods.registered().labels()}
    if name in derived:
        return derived[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_gain(metric: str) -> bool:
    """A personalization gain column: signed, shown with its interval in the cell."""
    return metric.startswith("gain_")


def display_number(metric: str, value: float, signed: bool = True) -> str:
    """A value as tables show it (two decimals for word counts, four otherwise; gains with
    their sign unless ``signed`` is False, as for a std)."""
    if metric == "mean_longest_copy":
        return f"{value:.2f}"
    return f"{value:+.4f}" if signed and is_gain(metric) else f"{value:.4f}"


def category_label(category: str | None) -> str:
    if category is None:
        return "overall"
    return category.replace("_and_", " & ").replace("_", " ")


def show_value(value: Any) -> str:
    """A value as it appears in row keys and notes (JSON spelling for booleans and null)."""
    return value if isinstance(value, str) else json.dumps(value)


def parse_assignments(text: str | None) -> dict[str, Any]:
    """``"k=4,with_text=false"`` -> ``{"k": 4, "with_text": False}`` (values read as JSON, else text)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"expected key=value, got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def row_key(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={show_value(values[k])}" for k in sorted(values))


def _value_order(value: Any) -> tuple:
    """Numbers (and booleans) by value, then text, then anything else."""
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, value) if isinstance(value, str) else (2, 0, json.dumps(value))


def resolve_defaults(groups: Sequence[RunGroup], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per ablation key, the value most common among DEP runs (counted per run, so seeds count)."""
    counts: dict[str, Counter] = {}
    for group in groups:
        if group.method != "dep":
            continue
        for key, value in group.ablation.items():
            counts.setdefault(key, Counter())[json.dumps(value)] += len(group.runs)
    defaults: dict[str, Any] = {}
    for key, counter in counts.items():
        top = max(counter.values())
        tied = sorted((json.loads(v) for v, c in counter.items() if c == top), key=_value_order)
        paper = AXES[key].paper if key in AXES else None  # the axis' own setting breaks a tie
        preferred = [v for v in tied if paper is not None and json.dumps(v) == json.dumps(paper)]
        defaults[key] = (preferred or tied)[0]
    for key, value in (overrides or {}).items():
        defaults[key] = value
    return defaults


# --------------------------------------------------------------------------------------
# Table model


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    seeds: int = 0
    low: float | None = None  # 95% bootstrap interval
    high: float | None = None
    ci_n: int | None = None  # samples in the interval
    p_value: float | None = None  # paired bootstrap vs the table's reference row
    rank: int = 0  # 1 best, 2 second best in its column (ranked rows only)
    empty: str | None = None  # why there is no value
    note: str | None = None  # why there is no interval / test (the value itself is fine)


@dataclass
class Row:
    label: str
    key: str
    kind: str = "method"  # "method" (ranked) | "reference" (shown, not ranked) | "difference"
    group: RunGroup | None = None
    missing: str | None = None  # why there is no run group
    cells: list[Cell] = field(default_factory=list)
    operands: tuple["Row", "Row"] | None = None  # a difference row: (plus, minus)
    reference: "Row | None" = None  # p-values against this row instead of the table's reference

    @property
    def seeds(self) -> int | None:
        return len(self.group.runs) if self.group is not None else None


@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[tuple[str | None, str]]  # (category or None for overall, metric)
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    reference: Row | None = None
    ranked: bool = True
    tested: bool = True
    p_reference: str | None = None  # what p-values are against when not a row (CSV "reference")

    def empty_cells(self) -> list[str]:
        """One line per row and reason: which cells are empty and why."""
        lines = []
        for row in self.rows:
            if row.missing:
                lines.append(f"{self.name} · {row.label}: all cells empty — {row.missing}")
                continue
            by_reason: dict[str, list[str]] = {}
            for (category, metric), cell in zip(self.columns, row.cells):
                if cell.empty:
                    by_reason.setdefault(cell.empty, []).append(f"{category_label(category)} {METRIC_LABELS[metric]}")
            for reason, columns in by_reason.items():
                lines.append(f"{self.name} · {row.label} · {', '.join(columns)}: {reason}")
        return lines


@dataclass
class Options:
    resamples: int = 1000
    seed: int = 0
    reference: str | None = None
    intervals: bool = True


# --------------------------------------------------------------------------------------
# Selecting run groups


def matches_ablation(ablation: dict, wanted: dict) -> bool:
    return all(key in ablation and json.dumps(ablation[key]) == json.dumps(value) for key, value in wanted.items())


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def _distinguishing(groups: Sequence[RunGroup]) -> list[str]:
    """Per group, the configuration fields whose values differ between the groups."""
    flat = []
    for group in groups:
        out: dict[str, str] = {}
        _flatten("", json.loads(group.first.group_key), out)
        flat.append(out)
    keys = sorted({k for f in flat for k in f if len({f.get(k) for f in flat}) > 1})
    return [", ".join(f"{k}={f.get(k, 'absent')}" for k in keys) for f in flat]


def _rows_for(label: str, key: str, candidates: Sequence[RunGroup], missing: str, kind: str = "method") -> list[Row]:
    """One row per candidate group; several candidates are told apart by what differs."""
    if not candidates:
        return [Row(label, key, kind, None, missing)]
    if len(candidates) == 1:
        return [Row(label, key, kind, candidates[0])]
    return [Row(f"{label} [{suffix}]", f"{key}#{i + 1}", kind, group)
            for i, (group, suffix) in enumerate(zip(candidates, _distinguishing(candidates)))]


def method_rows(groups: Sequence[RunGroup], method: str, defaults: dict[str, Any], kind: str = "method") -> list[Row]:
    """The method's run group(s) closest to the defaults (most ablation keys equal)."""
    own = [g for g in groups if g.method == method]
    if own:
        score = [sum(matches_ablation(g.ablation, {k: v}) for k, v in defaults.items()) for g in own]
        own = [g for g, s in zip(own, score) if s == max(score)]
    return _rows_for(method_label(method), method, own, f"no {method} run", kind)


def dep_rows(groups: Sequence[RunGroup], label: str, varied: dict[str, Any], defaults: dict[str, Any]) -> list[Row]:
    fixed = {k: v for k, v in defaults.items() if k not in varied}
    candidates = [g for g in groups
                  if g.method == "dep" and matches_ablation(g.ablation, varied) and matches_ablation(g.ablation, fixed)]
    wanted = row_key(varied)
    return _rows_for(label, wanted, candidates, f"no dep run with {wanted.replace(',', ', ')} and the other "
                                                f"ablation keys at their defaults")


def ordered_categories(groups: Sequence[RunGroup]) -> list[str]:
    found = {c for g in groups for c in g.categories()}
    if not found:
        return list(PAPER_CATEGORIES)
    return [c for c in PAPER_CATEGORIES if c in found] + sorted(found - set(PAPER_CATEGORIES))


# --------------------------------------------------------------------------------------
# Filling cells


class _CellFiller:
    def __init__(self, options: Options):
        self.options = options
        self._per_sample: dict[tuple[int, str | None, str], Any] = {}

    def per_sample(self, group: RunGroup, category: str | None, metric: str):
        key = (id(group), category, metric)
        if key not in self._per_sample:
            self._per_sample[key] = group.per_sample(category, metric)
        return self._per_sample[key]

    def fill(self, table: Table) -> None:
        for row in table.rows:
            if row.kind == "difference":
                continue
            row.cells = [self._cell(table, row, category, metric) for category, metric in table.columns]
        for row in table.rows:
            if row.kind == "difference":
                row.cells = self._difference(table, row)
        if table.ranked:
            self._rank(table)

    def _cell(self, table: Table, row: Row, category: str | None, metric: str) -> Cell:
        if row.group is None:
            return Cell(empty=row.missing)
        summary = row.group.summary(category, metric)
        if isinstance(summary, str):
            return Cell(empty=summary)
        cell = Cell(mean=summary[0], std=summary[1], seeds=summary[2])
        if not self.options.intervals:
            return cell
        mine = self.per_sample(row.group, category, metric)
        if isinstance(mine, str):
            cell.note = mine
            return cell
        ids, samples = mine
        interval = bootstrap_ci(samples, self.options.resamples, self.options.seed)
        cell.low, cell.high, cell.ci_n = interval.low, interval.high, interval.n
        reference = row.reference if row.reference is not None else table.reference
        if table.tested and reference is not None and reference is not row and reference.group is not None:
            theirs = self.per_sample(reference.group, category, metric)
            if isinstance(theirs, str):
                cell.note = f"no test: reference row {theirs}"
                return cell
            ref_ids, ref_samples = theirs
            position = {sid: i for i, sid in enumerate(ref_ids)}
            shared = [(i, position[sid]) for i, sid in enumerate(ids) if sid in position]
            if not shared:
                cell.note = "no test: no sample ids shared with the reference row"
                return cell
            mine_index, ref_index = (np.asarray(side) for side in zip(*shared))
            test = paired_bootstrap(samples.subset(mine_index), ref_samples.subset(ref_index),
                                    self.options.resamples, self.options.seed)
            cell.p_value = test.p_value
        return cell

    @staticmethod
    def _difference(table: Table, row: Row) -> list[Cell]:
        """A difference row (``+Improvement``): plus row minus minus row, per column."""
        plus, minus = row.operands
        cells = []
        for a, b in zip(plus.cells, minus.cells):
            if a.mean is None or b.mean is None:
                cells.append(Cell(empty=f"needs both {plus.label} and {minus.label}"))
            else:
                cells.append(Cell(mean=a.mean - b.mean))
        return cells

    @staticmethod
    def _rank(table: Table) -> None:
        """Best and second best per column, compared as displayed (equal-looking values share a mark)."""
        for column, (_, metric) in enumerate(table.columns):
            ranked = [row.cells[column] for row in table.rows if row.kind == "method" and row.cells[column].mean
                      is not None]
            shown = {id(cell): float(display_number(metric, cell.mean)) for cell in ranked}
            distinct = sorted(set(shown.values()), reverse=True)
            for cell in ranked:
                place = distinct.index(shown[id(cell)])
                cell.rank = place + 1 if place < 2 else 0


# --------------------------------------------------------------------------------------
# The tables


def _quality_columns(categories: Sequence[str], metrics: Sequence[str]) -> list[tuple[str | None, str]]:
    return [(category, metric) for category in categories for metric in metrics]


def _choose_reference(table: Table, default_key: str | None, requested: str | None) -> None:
    keys = {row.key: row for row in table.rows if row.kind != "difference"}
    wanted = []
    if requested:
        wanted += [requested, row_key(parse_assignments(requested))] if "=" in requested else [requested]
    if default_key:
        wanted += [default_key, f"{default_key}#1"]  # a split row (several groups) by its first part
    chosen = next((keys[key] for key in wanted if key in keys), None)
    table.reference = chosen
    if chosen is None:
        table.notes.append("no reference row, so no significance tests")
    elif chosen.group is None:
        table.notes.append(f"reference row {chosen.label} has no run, so no significance tests")


def _defaults_note(defaults: dict[str, Any], varied: Iterable[str]) -> str:
    fixed = [f"{k}={show_value(v)}" for k, v in sorted(defaults.items()) if k not in set(varied)]
    return "other ablation keys at their defaults: " + (", ".join(fixed) if fixed else "(no DEP runs)")


def _spoken_list(items: Sequence[str]) -> str:
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def table1(groups, defaults, categories) -> Table:
    """Every registered method (a row saying why it is empty when it has no run), then the
    methods of runs that no spec declares, then the reference rows."""
    ranked, reference = table_methods(), reference_methods()
    unregistered = sorted({g.method for g in groups} - set(ranked) - set(reference))
    rows: list[Row] = []
    for method in (*ranked, *unregistered):
        rows += method_rows(groups, method, defaults)
    for method in reference:
        rows += method_rows(groups, method, defaults, kind="reference")
    chosen = [row.group for row in rows if row.group is not None]
    metrics = list(THREE_METRICS)
    notes = []
    if any(not isinstance(g.summary(c, "bertscore"), str) for g in chosen for c in categories):
        metrics.append("bertscore")
    else:
        notes.append("BERTScore column left out: no run in this table computed it")
    caption = "R-1, MET., BL. and BS. denote ROUGE-1, METEOR, BLEU (0-100) and BERTScore; higher is better."
    if reference:
        caption += (f" {_spoken_list([method_label(m) for m in reference])} "
                    + ("is a reference row" if len(reference) == 1 else "are reference rows") + " (not ranked).")
    table = Table("table1", "Table 1: performance comparison of the baselines and DEP", caption,
                  _quality_columns(categories, metrics), rows, notes)
    table.notes.append("each method's run group closest to the ablation defaults ("
                       + (", ".join(f"{k}={show_value(v)}" for k, v in sorted(defaults.items()))
                          or "none: no DEP runs") + ")")
    for row in rows:
        # Trained adapters share DEP's ablation keys: say when their row is not at the defaults.
        if row.group is not None and row.group.method in ("dep", "no_user"):
            off = [f"{k}={show_value(row.group.ablation.get(k))}" for k, v in sorted(defaults.items())
                   if not matches_ablation(row.group.ablation, {k: v})]
            if off:
                table.notes.append(f"{row.label}: no run at the defaults; shown with {', '.join(off)}")
    return table


def _ablation_table(name, title, caption, groups, defaults, categories, metrics, specs, with_non_perso=False) -> Table:
    rows: list[Row] = []
    if with_non_perso:
        rows += method_rows(groups, "non_perso", defaults)
    varied_keys: set[str] = set()
    for label, varied in specs:
        varied_keys |= set(varied)
        rows += dep_rows(groups, label, varied, defaults)
    table = Table(name, title, caption, _quality_columns(categories, metrics), rows)
    table.notes.append(_defaults_note(defaults, varied_keys))
    return table


def conditions_table(counterfactual: Sequence[RunGroup], ordinary: Sequence[RunGroup], categories: Sequence[str],
                     options: Options) -> Table:
    """Generations under counterfactual conditions (``data.init_args.condition``): per
    configuration, its ordinary run (``true``) and a row per other condition, each tested
    against the ``true`` row (paired by sample). How much a method's text scores owe to the
    user's own history rather than to any user's of the same category."""
    order = {method: i for i, method in enumerate(method_order({g.method for g in counterfactual}))}
    by_plain: dict[str, list[RunGroup]] = {}
    for group in sorted(counterfactual, key=lambda g: (order[g.method], CONDITIONS.index(g.condition))):
        by_plain.setdefault(group.first.plain_key, []).append(group)
    plain_groups = {g.first.plain_key: g for g in ordinary}
    rows: list[Row] = []
    for number, (key, others) in enumerate(by_plain.items(), 1):
        label = method_label(others[0].method)
        base = plain_groups.get(key)
        plain = Row(f"{label} (true)", f"{others[0].method}@{number}:true", "method", base,
                    None if base is not None else f"no {others[0].method} run of the same configuration under true")
        rows.append(plain)
        for group in others:
            rows.append(Row(f"{label} ({group.condition})", f"{group.method}@{number}:{group.condition}", "method",
                            group, reference=plain))
    caption = ("The same configuration generating from the user's own history (true) and from another "
               "condition's: swap shows another user's reviews of the same category, none no history.")
    table = Table("conditions", "Generations under counterfactual conditions", caption,
                  _quality_columns(categories, THREE_METRICS), rows, ranked=False)
    if options.intervals:
        table.notes.append(f"† p < {SIGNIFICANCE} vs the row's configuration under true; p-values: two-sided "
                           f"paired bootstrap over the samples both rows share ({options.resamples} resamples, seed "
                           f"{options.seed}); seeds averaged per sample first")
    return table


# Ablation rows from the axes (dep_lightning/axes.py); table 2 crosses two of them.
EMBEDDING_SPECS = [(f"{text_label}: {label}", {"embeddings": value, "with_text": with_text})
                   for with_text, text_label in AXES["with_text"].rows
                   for value, label in AXES["embeddings"].rows]
REFINEMENT_SPECS = AXES["refinement"].specs()
RETRIEVER_SPECS = AXES["retriever"].specs()
GUIDANCE_SPECS = AXES["guidance"].specs()


def build_tables(registry: Registry, options: Options | None = None, defaults: dict[str, Any] | None = None
                 ) -> tuple[list[Table], dict[str, Any]]:
    """Every table of the runs' text metrics, filled; returns the tables and the defaults used.
    (The personalization table of their likelihoods: ``results/personalization.py``.)"""
    options = options or Options()
    # Runs whose test prompts showed another condition's history are counterfactuals of a
    # configuration, not a method's result: they appear in the conditions table only.
    groups = registry.ordinary_groups
    counterfactual = [g for g in registry.groups if g.condition != "true"]
    defaults = resolve_defaults(groups, defaults)
    categories = ordered_categories(groups)
    embed_caption = ("DEP with his_emb / diff_emb / both, without and with the retrieved review texts in the "
                     "prompt; Non-Perso for comparison.")
    refine_caption = "w/o DR: raw embeddings; w/ AE: plain autoencoder; w/ SAE: sparse autoencoder."
    tables = [
        table1(groups, defaults, categories),
        _ablation_table("table2", "Table 2: user-embedding configurations (METEOR)", embed_caption, groups, defaults,
                        categories, ("meteor",), EMBEDDING_SPECS, with_non_perso=True),
        _ablation_table("table3", "Table 3: representation refinement (METEOR)", refine_caption, groups, defaults,
                        categories, ("meteor",), REFINEMENT_SPECS),
        _ablation_table("table6", "Table 6: user-embedding configurations (all metrics)", embed_caption, groups,
                        defaults, categories, THREE_METRICS, EMBEDDING_SPECS, with_non_perso=True),
        _ablation_table("table7", "Table 7: representation refinement (all metrics)", refine_caption, groups,
                        defaults, categories, THREE_METRICS, REFINEMENT_SPECS),
        _ablation_table("table8", "Table 8: retrieval strategies", "History retrieval for DEP (the paper compared "
                        "them with RAG on a 32B backbone; Embedding stands for its Contriever row).", groups, defaults,
                        categories, THREE_METRICS, RETRIEVER_SPECS),
        _ablation_table("table9", "Table 9: system-prompt guidance", "DEP with and without the note explaining the "
                        "two embedding kinds; +Improvement = w/ minus w/o.", groups, defaults, categories,
                        THREE_METRICS, GUIDANCE_SPECS),
    ]
    table9 = tables[-1]
    on = next(r for r in table9.rows if r.key.startswith("guidance=true"))
    off = next(r for r in table9.rows if r.key.startswith("guidance=false"))
    table9.rows.append(Row("+Improvement", "improvement", "difference", operands=(on, off)))
    varied_by = {"table2": ("embeddings", "with_text"), "table6": ("embeddings", "with_text"),
                 "table3": ("refinement",), "table7": ("refinement",), "table8": ("retriever",),
                 "table9": ("guidance",)}
    for axis in AXES.values():  # axes that declare a table of their own
        if axis.table:
            tables.append(_ablation_table(f"axis_{axis.key}", axis.table, axis.doc, groups, defaults, categories,
                                          THREE_METRICS, axis.specs()))
            varied_by[f"axis_{axis.key}"] = (axis.key,)

    hygiene_rows = [Row(r.label, r.key, "method", r.group, r.missing) for r in tables[0].rows]
    hygiene = Table("hygiene", "Output hygiene per method",
                    "copy rate: share of outputs with a word run of >= copy_n words copied verbatim from a shown "
                    "history review; mean longest copy: in words; limit rate: share that hit max_new_tokens; "
                    "echo rate: share that repeat the prompt's structure. Not ranked: lower is not always better.",
                    [(None, metric) for metric in HYGIENE_METRICS], hygiene_rows, ranked=False, tested=False)
    tables.append(hygiene)

    default_refs = {"table1": "dep", "hygiene": None}
    for table in tables[1:-1]:
        varied = varied_by[table.name]
        default_refs[table.name] = row_key({k: defaults[k] for k in varied}) if all(k in defaults for k in varied) \
            else None
    filler = _CellFiller(options)
    for table in tables:
        if table.tested:
            _choose_reference(table, default_refs[table.name], options.reference)
        if not any(row.group for row in table.rows):
            table.notes.insert(0, "no runs for this table yet: every cell is empty")
        filler.fill(table)

    if counterfactual:
        conditions = conditions_table(counterfactual, groups, categories, options)
        filler.fill(conditions)
        tables.append(conditions)
    return tables, defaults
