"""Tables as Markdown, LaTeX and CSV.

Markdown and LaTeX show mean ± std over seeds (std only with two or more seeds), the best
value of each column in bold and the second best underlined (Markdown ``**x**`` /
``<u>x</u>``, LaTeX ``\\textbf`` / ``\\underline``), and ``—`` (LaTeX ``--``) for a
missing value. Significance against the table's reference row: a ``†`` after the value
in Markdown when p < 0.05, the p-value itself in LaTeX. CSV is long format, one line per
cell, with everything: mean, std, seeds, 95% interval, p-value, rank, why a cell is
empty, and the run directories behind it. Gain cells of the personalization table show
their sign and their 95% interval in Markdown and LaTeX too: ``+0.0120† [+0.0040, +0.0200]``.
"""

from __future__ import annotations

import csv
import io

from dep_lightning.results.tables import (
    EMPTY,
    METRIC_LABELS,
    SIGNIFICANCE,
    Cell,
    Options,
    Table,
    category_label,
    display_number,
    is_gain,
)

DAGGER = "†"
CSV_FIELDS = ("table", "row", "row_key", "kind", "category", "metric", "mean", "std", "seeds", "ci_low", "ci_high",
              "ci_n", "p_value", "reference", "rank", "empty_reason", "note", "runs")


def value_text(cell: Cell, metric: str, plus_minus: str = " ± ") -> str | None:
    if cell.mean is None:
        return None
    text = display_number(metric, cell.mean)
    if cell.std is not None:
        text += plus_minus + display_number(metric, cell.std, signed=False)
    return text


def interval_text(cell: Cell, metric: str) -> str:
    """`` [low, high]`` after a gain cell's value; empty for other cells and without an interval."""
    if not is_gain(metric) or cell.low is None or cell.high is None:
        return ""
    return f" [{display_number(metric, cell.low)}, {display_number(metric, cell.high)}]"


def p_text(p: float) -> str:
    """``<0.001`` or ``=0.012`` (to follow a ``p``)."""
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def _legend(table: Table, options: Options) -> str | None:
    if table.reference is None or table.reference.group is None or not options.intervals:
        return None
    return (f"p-values: two-sided paired bootstrap against {table.reference.label} over the samples both rows "
            f"share ({options.resamples} resamples, seed {options.seed}); seeds averaged per sample first")


def _column_groups(table: Table) -> list[tuple[str | None, int]]:
    groups: list[tuple[str | None, int]] = []
    for category, _ in table.columns:
        if groups and groups[-1][0] == category:
            groups[-1] = (category, groups[-1][1] + 1)
        else:
            groups.append((category, 1))
    return groups


def _seeds_text(row, empty: str) -> str:
    if row.kind == "difference":
        return ""
    return str(row.seeds) if row.seeds is not None else empty


# --------------------------------------------------------------------------------------
# Markdown


def markdown_cell(cell: Cell, metric: str) -> str:
    text = value_text(cell, metric)
    if text is None:
        return EMPTY
    if cell.rank == 1:
        text = f"**{text}**"
    elif cell.rank == 2:
        text = f"<u>{text}</u>"
    if cell.p_value is not None and cell.p_value < SIGNIFICANCE:
        text += DAGGER
    return text + interval_text(cell, metric)


def to_markdown(table: Table, options: Options) -> str:
    header = ["Method"] + [(f"{category_label(c)} " if c is not None else "") + METRIC_LABELS[m]
                           for c, m in table.columns] + ["seeds"]
    lines = [f"### {table.title}", "", table.caption, "",
             "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(table.columns) + 1)]
    for row in table.rows:
        label = row.label.replace("|", "\\|") + (" (ref.)" if row is table.reference else "")
        cells = [markdown_cell(cell, metric) for cell, (_, metric) in zip(row.cells, table.columns)]
        lines.append("| " + " | ".join([label, *cells, _seeds_text(row, EMPTY)]) + " |")
    notes = list(table.notes)
    legend = _legend(table, options)
    if legend:
        notes.append(f"{DAGGER} p < {SIGNIFICANCE} vs {table.reference.label}; " + legend)
    if table.ranked:
        notes.append("bold: best, underlined: second best per column (ranked rows only)")
    notes.append(f"{EMPTY}: no value (the reasons are listed by `dep-lightning tables`)")
    lines.append("")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "—": "--", "·": r"$\cdot$", "≥": r"$\geq$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_cell(cell: Cell, metric: str) -> str:
    text = value_text(cell, metric, plus_minus=r" $\pm$ ")
    if text is None:
        return "--"
    if cell.rank == 1:
        text = rf"\textbf{{{text}}}"
    elif cell.rank == 2:
        text = rf"\underline{{{text}}}"
    text += interval_text(cell, metric)
    if cell.p_value is not None:
        text += rf" {{\scriptsize ($p{p_text(cell.p_value)}$)}}"
    return text


def to_latex(table: Table, options: Options) -> str:
    n_cols = len(table.columns)
    groups = _column_groups(table)
    caption = latex_escape(f"{table.title}. {table.caption}")
    legend = _legend(table, options)
    if legend:
        caption += " " + latex_escape(legend[0].upper() + legend[1:]) + "."
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
             rf"\label{{tab:{table.name}}}", r"\begin{tabular}{l" + "c" * n_cols + "c}", r"\toprule"]
    if any(category is not None for category, _ in groups):
        spans, rules, start = [], [], 2
        for category, width in groups:
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(category_label(category))}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & " + " & ".join(spans) + r" & \\")
        lines.append("".join(rules))
    header = ["Method"] + [latex_escape(METRIC_LABELS[m]) for _, m in table.columns] + ["$n$"]
    lines += [" & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.kind != previous.kind:
            lines.append(r"\midrule")  # reference and difference rows stand apart
        previous = row
        label = latex_escape(row.label) + (" (ref.)" if row is table.reference else "")
        cells = [latex_cell(cell, metric) for cell, (_, metric) in zip(row.cells, table.columns)]
        lines.append(" & ".join([label, *cells, _seeds_text(row, "--")]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    lines += [f"% {latex_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# CSV


def _csv_number(value: float | int | None) -> str:
    return "" if value is None else repr(float(value)) if not isinstance(value, int) else str(value)


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    reference = table.reference.key if table.reference is not None and table.reference.group is not None \
        else table.p_reference or ""
    for row in table.rows:
        runs = ";".join(row.group.sources) if row.group is not None else ""
        against = row.reference.key if row.reference is not None else reference
        for cell, (category, metric) in zip(row.cells, table.columns):
            writer.writerow([
                table.name, row.label, row.key, row.kind, category if category is not None else "overall", metric,
                _csv_number(cell.mean), _csv_number(cell.std),
                "" if row.kind == "difference" else (row.seeds or 0),
                _csv_number(cell.low), _csv_number(cell.high), _csv_number(cell.ci_n), _csv_number(cell.p_value),
                against if cell.p_value is not None else "", cell.rank or "", cell.empty or "", cell.note or "",
                runs,
            ])
    return out.getvalue()
