"""``dep-lightning tables`` and ``export``: the paper's tables and figures from run directories,
and run directories copied for sharing.

:func:`tables` and :func:`export` are the commands (their signatures are the options);
:func:`make_tables` is the same work for Python callers (notebooks, scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from dep_lightning.data.errors import ConfigError
from dep_lightning.results.personalization import personalization_table
from dep_lightning.results.registry import Registry, load_registry
from dep_lightning.results.render import to_csv, to_latex, to_markdown
from dep_lightning.results.tables import Options, Table, build_tables, ordered_categories, parse_assignments

FORMATS = {"md": "md", "markdown": "md", "latex": "tex", "tex": "tex", "csv": "csv"}


def parse_formats(text: str) -> list[str]:
    """``"md,latex,csv"`` -> file suffixes ``["md", "tex", "csv"]``."""
    suffixes = []
    for name in (part.strip().lower() for part in text.split(",") if part.strip()):
        if name not in FORMATS:
            raise ConfigError("--format", text, f"unknown format {name!r}; choose from md, latex, csv")
        if FORMATS[name] not in suffixes:
            suffixes.append(FORMATS[name])
    return suffixes


def tables(runs: Sequence[str] = (), out: str = "tables", format: str = "md,latex,csv", reference: str | None = None,
           wandb: str | None = None, defaults: str | None = None, resamples: int = 1000, seed: int = 0,
           figures: bool = True) -> None:
    """Regenerate the paper's tables and figures from run directories and/or a W&B project.

    Args:
        runs: folders searched recursively for run directories (manifest.json + metrics.json).
        out: output folder.
        format: comma-separated: md, latex, csv.
        reference: row the others are tested against: a method (table 1) or a row key such as
            refinement=ae (ablation tables).
        wandb: also read runs from this W&B project, ENTITY/PROJECT (online).
        defaults: ablation defaults KEY=VALUE,..., e.g. k=4,retriever=recency (default: the
            most common value among DEP runs).
        resamples: bootstrap resamples per interval and test.
        seed: bootstrap seed.
        figures: also write the figures (--no-figures: tables only).
    """
    if not runs and not wandb:
        raise ConfigError("--runs", list(runs), "give --runs DIR... and/or --wandb ENTITY/PROJECT")
    if resamples < 1:
        raise ConfigError("--resamples", resamples, "at least 1")
    try:
        assignments = parse_assignments(defaults)
    except ValueError as error:
        raise ConfigError("--defaults", defaults, str(error)) from None
    make_tables(runs, out=out, formats=parse_formats(format), reference=reference, wandb=wandb,
                defaults=assignments, resamples=resamples, seed=seed, figures=figures)


def export(*, runs: Sequence[str], out: str) -> None:
    """Copy run directories without checkpoints, for sharing; `dep-lightning tables --runs OUT` reads the copy.

    Args:
        runs: folders searched recursively for run directories (manifest.json + metrics.json).
        out: where the copies go (each run keeps its path relative to its --runs folder).
    """
    from dep_lightning.results.export import export_runs

    exported = export_runs(list(runs), out)
    print(f"export: {len(exported)} run(s) under {out}")


def make_tables(
    runs: Sequence[str] = (),
    out: str | Path | None = "tables",
    formats: Sequence[str] = ("md", "tex", "csv"),
    reference: str | None = None,
    wandb: str | None = None,
    defaults: str | dict | None = None,
    resamples: int = 1000,
    seed: int = 0,
    intervals: bool = True,
    figures: bool = True,
    echo: Callable[[str], None] = print,
) -> list[Table]:
    """Build every table (and figure) from run directories and/or a W&B project.

    Args:
        runs: folders searched recursively for run directories (manifest.json + metrics.json).
        out: folder for table<N>.md/.tex/.csv, hygiene.*, personalization.* (only when some run has a
            likelihood block) and the figure PNGs; None writes nothing.
        formats: file suffixes to write, from md, tex, csv.
        reference: the row every other row is tested against: a method (table 1) or a row
            key such as ``refinement=ae`` (ablation tables); tables it does not name keep their
            default reference (DEP in table 1, the all-defaults row in ablation tables).
        wandb: ``ENTITY/PROJECT`` to read runs from W&B as well (online only).
        defaults: ablation defaults, ``"k=4,retriever=bm25"`` or a dict; unnamed keys take
            the value most common among DEP runs.
        resamples: bootstrap resamples per interval and test.
        seed: seed of the bootstrap.
        intervals: compute intervals and tests (needs predictions/test.jsonl).
        figures: write the K-sweep and uniqueness figures (and the personalization figure with its table).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    registry = load_registry(runs) if runs else Registry([])
    if wandb:
        from dep_lightning.results.wandb_source import load_wandb_registry

        remote = load_wandb_registry(wandb)
        registry = Registry(registry.runs + remote.runs, registry.notes + remote.notes)
    overrides = parse_assignments(defaults) if isinstance(defaults, str) else dict(defaults or {})
    options = Options(resamples=resamples, seed=seed, reference=reference, intervals=intervals)
    tables, resolved = build_tables(registry, options, overrides)
    personalization = personalization_table(registry.runs, resolved, options)
    if personalization is not None:  # only when some run has a likelihood block
        tables.append(personalization)

    score_only = len(registry.score_only)  # likelihoods only: in the personalization table alone
    echo(f"{len(registry.runs) - score_only} run(s) in {len(registry.groups)} configuration(s)"
         + (f" and {score_only} score-only run(s) (personalization table only)" if score_only else ""))
    for table in tables:
        echo("")
        echo(to_markdown(table, options))
    written: list[Path] = []
    notes = registry.all_notes()
    if personalization is None:
        notes.append("personalization: no run has a likelihood block (dep-lightning score), so no personalization "
                     "table or figure")
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for table in tables:
            for suffix in formats:
                path = folder / f"{table.name}.{suffix}"
                text = {"md": lambda: to_markdown(table, options), "tex": lambda: to_latex(table, options),
                        "csv": lambda: to_csv(table)}[suffix]()
                path.write_text(text, encoding="utf-8")
                written.append(path)
        if figures:
            from dep_lightning.results.figures import k_sweep_figure, uniqueness_figure

            categories = ordered_categories(registry.ordinary_groups)
            notes += k_sweep_figure(registry.ordinary_groups, resolved, categories, folder / "figure_k_sweep.png")
            notes += uniqueness_figure(tables[0].rows, folder / "figure_uniqueness.png")
            written += [folder / "figure_k_sweep.png", folder / "figure_uniqueness.png"]
            if personalization is not None:
                from dep_lightning.results.figures import personalization_figure

                notes += personalization_figure(personalization, folder / "figure_personalization.png")
                written.append(folder / "figure_personalization.png")

    empty = [line for table in tables for line in table.empty_cells()]
    echo("empty cells:" if empty else "empty cells: none")
    for line in empty:
        echo(f"  {line}")
    if notes:
        echo("notes:")
        for note in notes:
            echo(f"  {note}")
    if written:
        echo(f"wrote {len(written)} file(s) to {Path(out)}/: " + " ".join(p.name for p in written))
    return tables
