"""The committed study (docs/results/) regenerates: its tables equal what `tables` makes of its runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dep_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


# (run folders, tables options, committed output folder), as `make study-v1` writes them.
STUDIES = [([RESULTS / "runs"], ["--reference", "no_user"], RESULTS / "tables"),
           ([RESULTS / "runs"], ["--reference", "rag"], RESULTS / "tables" / "vs_rag"),
           ([RESULTS / "long" / "runs"], ["--reference", "no_user"], RESULTS / "long" / "tables"),
           ([RESULTS / "runs", RESULTS / "long" / "runs"], ["--reference", "rag", "--defaults", "with_text=false"],
            RESULTS / "long" / "tables" / "vs_rag"),
           ([RESULTS / "scored" / "runs"], ["--reference", "no_user"], RESULTS / "scored" / "tables"),
           # The second edition (`make study`), as far as its runs are committed.
           ([RESULTS / "v2" / "runs"], ["--reference", "no_user"], RESULTS / "v2" / "tables")]


@pytest.mark.parametrize("runs, options, folder", STUDIES,
                         ids=[str(folder.relative_to(RESULTS)) for _, _, folder in STUDIES])
def test_committed_tables_regenerate_from_the_committed_runs(tmp_path, runs, options, folder):
    main(["tables", "--runs", *map(str, runs), "--out", str(tmp_path), *options, "--format", "md,csv",
          "--no-figures"])
    committed = sorted(p.name for p in folder.glob("*.md"))
    assert "table1.md" in committed
    assert sorted(p.name for p in tmp_path.glob("*.md")) == committed  # no table left uncommitted
    for name in committed:
        assert (tmp_path / name).read_text() == (folder / name).read_text(), name
    for folder_of_runs in runs:
        assert not any("checkpoints" in str(p) or p.suffix == ".ckpt" for p in folder_of_runs.rglob("*"))


def _results_doc():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "scripts" / "results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("report, expected", [("docs/results.md", "v2/tables"),
                                               ("docs/results/first_edition.md", "long/tables")])
def test_the_report_embeds_the_committed_tables(report, expected):
    doc = _results_doc()
    text = (ROOT / report).read_text(encoding="utf-8")
    blocks = doc.BLOCK.findall(text)
    assert blocks and {kind for kind, _, _ in blocks} <= {"include", "summary"}
    assert any(expected in arguments for _, arguments, _ in blocks)
    _, stale = doc.refresh(text)
    assert stale == [], f"run: python scripts/results_doc.py {report} --write"


def test_a_stale_block_is_found_and_rewritten(tmp_path):
    doc = _results_doc()
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    report = tmp_path / "report.md"
    report.write_text("intro\n<!-- include: t.md -->\n| a |\n|---|\n| 0 |\n<!-- /include -->\nend\n")
    new, stale = doc.refresh(report.read_text(), root=tmp_path)
    assert stale == ["include: t.md"]
    assert new == "intro\n<!-- include: t.md -->\n| a |\n|---|\n| 1 |\n<!-- /include -->\nend\n"
    assert doc.refresh(new, root=tmp_path)[1] == []
    with pytest.raises(FileNotFoundError, match="missing.md"):
        doc.refresh("<!-- include: missing.md -->\n<!-- /include -->", root=tmp_path)


def _approx(value):
    """``value`` with every float wrapped for comparison: summation order may differ between CPU kinds."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value


def test_the_second_editions_summary_regenerates_from_its_committed_runs():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("study_summary", ROOT / "scripts" / "study_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = json.loads((RESULTS / "v2" / "summary.json").read_text())
    fresh = json.loads(json.dumps(module.summarize(RESULTS / "v2" / "runs")))  # tuples as lists, like the file
    assert fresh == _approx(committed)
    # The comparisons table, from the committed summary (its numbers are checked just above).
    assert module.comparisons_table(committed) == (RESULTS / "v2" / "comparisons.md").read_text()
    assert committed["runs"] and all(run["n"] == 869 and run["whole_split"] for run in committed["runs"])
