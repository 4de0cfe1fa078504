"""`dep-lightning tables` on constructed run directories: every cell checked by hand."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from dep_lightning.cli import main
from dep_lightning.results.command import make_tables
from tests.results.runs import write_run

NOT_RUN = "—"


def quality(r1, met, bleu, bs=None) -> dict:
    return {"rouge1": r1, "meteor": met, "bleu": bleu, **({"bertscore": bs} if bs is not None else {})}


UNIQUENESS = {"unique": {"n": 8, "rouge1": 0.33, "meteor": 0.26, "bleu": 7.0},
              "non_unique": {"n": 8, "rouge1": 0.30, "meteor": 0.22, "bleu": 5.0}}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two DEP seeds at the defaults, an AE run, a no-guidance run, a K=1 run and three other methods.

    Per-sample ROUGE-1 / METEOR equal the metrics.json value for every sample, so every
    paired difference is constant: p = 1/1001 when the values differ, 1 when they agree.
    Outputs equal the references (BLEU 100) except for RAG and Non-Perso (no word right).
    """
    root = tmp_path_factory.mktemp("runs")
    write_run(root / "dep" / "seed0", {"Books": quality(0.37, 0.30, 13.0, 0.55),
                                       "CDs_and_Vinyl": quality(0.31, 0.23, 6.0, 0.51)}, seed=0, uniqueness=UNIQUENESS)
    write_run(root / "dep" / "seed1", {"Books": quality(0.38, 0.32, 14.0, 0.56),
                                       "CDs_and_Vinyl": quality(0.33, 0.24, 7.0, 0.52)}, seed=1, uniqueness=UNIQUENESS)
    write_run(root / "ablations" / "ae", {"Books": quality(0.36, 0.29, 12.5),
                                          "CDs_and_Vinyl": quality(0.31, 0.22, 6.4)}, refinement="ae")
    write_run(root / "ablations" / "no_guidance", {"Books": quality(0.36, 0.30, 13.0),
                                                   "CDs_and_Vinyl": quality(0.30, 0.22, 6.0)}, guidance=False)
    write_run(root / "ablations" / "k1", {"Books": quality(0.35, 0.28, 11.0),
                                          "CDs_and_Vinyl": quality(0.29, 0.21, 5.0)}, k=1, uniqueness=UNIQUENESS)
    write_run(root / "baselines" / "rag", {"Books": quality(0.34, 0.21, 6.8),
                                           "CDs_and_Vinyl": quality(0.30, 0.17, 3.1)},
              method="rag", predictions="garbage", refinement=None, embeddings="none")
    write_run(root / "baselines" / "non_perso", {"Books": quality(0.30, 0.17, 2.6),
                                                 "CDs_and_Vinyl": quality(0.27, 0.16, 1.1)},
              method="non_perso", predictions="garbage", refinement=None, embeddings="none", with_text=False, k=0)
    write_run(root / "baselines" / "copy_recent", {"Books": quality(0.50, 0.31, 90.0),
                                                   "CDs_and_Vinyl": quality(0.45, 0.235, 80.0)},
              method="copy_recent", refinement=None, embeddings="none")
    (root / "crashed").mkdir()
    (root / "crashed" / "manifest.json").write_text("{}")  # no metrics.json: not a run
    return root


@pytest.fixture(scope="module")
def tables_dir(runs_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    make_tables([str(runs_dir)], out=out, echo=lambda line: None)
    return out


def markdown_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {row label: cells} of the Markdown table in ``path``."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    header, body = split[0], split[2:]
    return header, {cells[0]: cells[1:] for cells in body}


def test_table1_cell_by_cell(tables_dir):
    header, rows = markdown_rows(tables_dir / "table1.md")
    assert header == ["Method", "Books R-1", "Books MET.", "Books BL.", "Books BS.", "CDs & Vinyl R-1",
                      "CDs & Vinyl MET.", "CDs & Vinyl BL.", "CDs & Vinyl BS.", "seeds"]
    missing = [NOT_RUN] * 9
    # DEP: mean ± sample std of two seeds, e.g. ROUGE-1 (0.37 + 0.38) / 2 = 0.375, std |0.37 - 0.38| / sqrt(2).
    expected = {
        "Non-Perso": ["0.3000†", "0.1700†", "2.6000†", NOT_RUN, "0.2700†", "0.1600†", "1.1000†", NOT_RUN, "1"],
        "RAG": ["<u>0.3400</u>†", "<u>0.2100</u>†", "<u>6.8000</u>†", NOT_RUN,
                "<u>0.3000</u>†", "<u>0.1700</u>†", "<u>3.1000</u>†", NOT_RUN, "1"],
        "PAG": missing, "DPL": missing, "PPlug": missing, "No-User": missing,
        "DEP (ref.)": ["**0.3750 ± 0.0071**", "**0.3100 ± 0.0141**", "**13.5000 ± 0.7071**", "**0.5550 ± 0.0071**",
                       "**0.3200 ± 0.0141**", "**0.2350 ± 0.0071**", "**6.5000 ± 0.7071**", "**0.5150 ± 0.0071**",
                       "2"],
        # A reference row: never bold although its ROUGE-1 is the highest; tested like any row
        # (same METEOR and same outputs as DEP -> no marker).
        "Copy-Recent": ["0.5000†", "0.3100", "90.0000", NOT_RUN, "0.4500†", "0.2350", "80.0000", NOT_RUN, "1"],
        "Copy-Concat": missing,
    }
    assert rows == expected


def test_table3_cell_by_cell(tables_dir):
    header, rows = markdown_rows(tables_dir / "table3.md")
    assert header == ["Method", "Books MET.", "CDs & Vinyl MET.", "seeds"]
    assert rows == {
        "w/o DR": [NOT_RUN, NOT_RUN, NOT_RUN],
        "w/ AE": ["<u>0.2900</u>†", "<u>0.2200</u>†", "1"],
        "w/ SAE (ref.)": ["**0.3100 ± 0.0141**", "**0.2350 ± 0.0071**", "2"],
    }
    text = (tables_dir / "table3.md").read_text()
    assert "other ablation keys at their defaults: embeddings=his+diff, guidance=true, k=4, retriever=recency, " \
           "with_text=true" in text
    assert "† p < 0.05 vs w/ SAE" in text


def test_table9_difference_row(tables_dir):
    _, rows = markdown_rows(tables_dir / "table9.md")
    assert rows["w/o Guidance"] == ["<u>0.3600</u>†", "<u>0.3000</u>†", "<u>13.0000</u>",
                                    "<u>0.3000</u>†", "<u>0.2200</u>†", "<u>6.0000</u>", "1"]
    assert rows["w/ Guidance (ref.)"][:3] == ["**0.3750 ± 0.0071**", "**0.3100 ± 0.0141**", "**13.5000 ± 0.7071**"]
    # w/ minus w/o: 0.375 - 0.36, 0.31 - 0.30, 13.5 - 13.0, 0.32 - 0.30, 0.235 - 0.22, 6.5 - 6.0
    assert rows["+Improvement"] == ["0.0150", "0.0100", "0.5000", "0.0200", "0.0150", "0.5000", ""]


def test_table2_only_the_default_configuration_exists(tables_dir):
    _, rows = markdown_rows(tables_dir / "table2.md")
    assert rows["Non-Perso"] == ["<u>0.1700</u>†", "<u>0.1600</u>†", "1"]  # second of two values
    assert rows["w/ text: his_emb + diff_emb (ref.)"] == ["**0.3100 ± 0.0141**", "**0.2350 ± 0.0071**", "2"]
    for label in ("w/o text: his_emb", "w/o text: diff_emb", "w/o text: his_emb + diff_emb", "w/ text: his_emb",
                  "w/ text: diff_emb"):
        assert rows[label] == [NOT_RUN, NOT_RUN, NOT_RUN]


def test_hygiene_table(tables_dir):
    header, rows = markdown_rows(tables_dir / "hygiene.md")
    assert header == ["Method", "copy rate", "mean longest copy", "limit rate", "echo rate", "seeds"]
    assert rows["DEP"] == ["0.1250 ± 0.0000", "4.50 ± 0.00", "0.5000 ± 0.0000", "0.0000 ± 0.0000", "2"]
    assert rows["RAG"] == ["0.1250", "4.50", "0.5000", "0.0000", "1"]  # never bold: not ranked
    assert rows["PAG"] == [NOT_RUN] * 5


def test_csv_has_intervals_p_values_and_reasons(tables_dir):
    rows = list(csv.DictReader(io.StringIO((tables_dir / "table3.csv").read_text())))
    by = {(r["row_key"], r["category"]): r for r in rows}
    ae = by["refinement=ae", "Books"]
    assert float(ae["mean"]) == pytest.approx(0.29) and ae["std"] == "" and ae["seeds"] == "1"
    assert float(ae["p_value"]) == pytest.approx(1 / 1001)
    assert ae["reference"] == "refinement=sae" and ae["rank"] == "2"
    assert float(ae["ci_low"]) == pytest.approx(0.29) and float(ae["ci_high"]) == pytest.approx(0.29)
    assert ae["ci_n"] == "8" and ae["runs"].endswith("ablations/ae")
    sae = by["refinement=sae", "Books"]
    assert float(sae["std"]) == pytest.approx(0.0141421356) and sae["p_value"] == "" and sae["rank"] == "1"
    assert len(sae["runs"].split(";")) == 2
    none = by["refinement=none", "Books"]
    assert none["mean"] == "" and "no dep run with refinement=none" in none["empty_reason"]


def test_latex_marks_best_second_and_p_values(tables_dir):
    tex = (tables_dir / "table3.tex").read_text()
    assert (r"w/ AE & \underline{0.2900} {\scriptsize ($p<0.001$)} & "
            r"\underline{0.2200} {\scriptsize ($p<0.001$)} & 1 \\" in tex)
    assert r"w/ SAE (ref.) & \textbf{0.3100 $\pm$ 0.0141} & \textbf{0.2350 $\pm$ 0.0071} & 2 \\" in tex
    assert r"w/o DR & -- & -- & -- \\" in tex
    assert r"\multicolumn{1}{c}{CDs \& Vinyl}" in tex
    assert tex.count(r"\begin{tabular}") == 1 and tex.count(r"\end{tabular}") == 1


def test_reference_and_defaults_options(runs_dir, tmp_path):
    tables = make_tables([str(runs_dir)], out=None, reference="rag", defaults="refinement=ae", resamples=200,
                         echo=lambda line: None)
    table1 = tables[0]
    assert table1.reference.label == "RAG"
    dep = next(row for row in table1.rows if row.key == "dep")
    assert dep.group.ablation["refinement"] == "ae"  # the DEP row follows the defaults
    assert dep.cells[1].mean == pytest.approx(0.29)
    assert not any(note.startswith("DEP: no run at the defaults") for note in table1.notes)
    table3 = next(t for t in tables if t.name == "table3")
    assert table3.reference.key == "refinement=ae"  # "rag" names no row there: its default reference
    ae, sae = (next(r for r in table3.rows if r.key == key) for key in ("refinement=ae", "refinement=sae"))
    assert ae.cells[0].p_value is None and sae.cells[0].p_value == pytest.approx(1 / 201)
    tables = make_tables([str(runs_dir)], out=None, reference="refinement=ae", intervals=False, echo=lambda line: None)
    assert next(t for t in tables if t.name == "table7").reference.key == "refinement=ae"
    # Defaults nothing matches exactly: the closest group is shown, and the note says so.
    tables = make_tables([str(runs_dir)], out=None, defaults="retriever=bm25", intervals=False, echo=lambda line: None)
    assert "DEP: no run at the defaults; shown with retriever=recency" in tables[0].notes


def test_empty_runs_folder_still_writes_every_table(tmp_path):
    (tmp_path / "runs").mkdir()
    lines: list[str] = []
    make_tables([str(tmp_path / "runs")], out=tmp_path / "out", echo=lines.append)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    for name in ("table1", "table2", "table3", "table6", "table7", "table8", "table9", "hygiene"):
        assert {f"{name}.md", f"{name}.tex", f"{name}.csv"} <= names
    header, rows = markdown_rows(tmp_path / "out" / "table3.md")
    assert header == ["Method", "Books MET.", "Movies & TV MET.", "CDs & Vinyl MET.", "seeds"]
    assert rows == {label: [NOT_RUN] * 4 for label in ("w/o DR", "w/ AE", "w/ SAE")}
    assert "no runs for this table yet" in (tmp_path / "out" / "table3.md").read_text()
    assert "0 run(s) in 0 configuration(s)" in lines


def test_runs_that_differ_in_more_than_seed_get_separate_rows(tmp_path):
    scores = {"Books": quality(0.3, 0.2, 5.0)}
    write_run(tmp_path / "a", scores, seed=0, predictions=None)
    write_run(tmp_path / "b", scores, seed=0, predictions=None, backbone="qwen2.5-7b-instruct")
    table1 = make_tables([str(tmp_path)], out=None, echo=lambda line: None)[0]
    labels = [row.label for row in table1.rows if row.key.startswith("dep")]
    assert labels == ['DEP [backbone="qwen2.5-7b-instruct"]', 'DEP [backbone="smollm2-135m-instruct"]'] or \
        labels == ['DEP [backbone="smollm2-135m-instruct"]', 'DEP [backbone="qwen2.5-7b-instruct"]']
    # No predictions: values without intervals, and the reason is recorded.
    dep = next(row for row in table1.rows if row.key.startswith("dep"))
    assert dep.cells[0].mean == pytest.approx(0.3) and dep.cells[0].low is None
    assert "no predictions/test.jsonl" in dep.cells[0].note


def test_cli_prints_tables_and_empty_cells(runs_dir, tmp_path, capsys):
    main(["tables", "--runs", str(runs_dir), "--out", str(tmp_path / "out"), "--format", "md,csv",
          "--resamples", "100", "--no-figures"])
    out = capsys.readouterr().out
    assert "8 run(s) in 7 configuration(s)" in out
    assert "### Table 3: representation refinement (METEOR)" in out
    assert "table3 · w/o DR: all cells empty — no dep run with refinement=none and the other ablation keys at " \
           "their defaults" in out
    assert "table1 · RAG · Books BS., CDs & Vinyl BS.: bertscore not in metrics.json" in out
    assert "crashed: not a complete run (no metrics.json); skipped" in out
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert "table1.md" in written and "table1.csv" in written and "table1.tex" not in written
    assert not any(name.endswith(".png") for name in written)


def test_cli_rejects_missing_inputs_and_formats(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tables"])
    assert exit_info.value.code == 2 and "--runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tables", "--runs", str(tmp_path), "--format", "pdf"])
    assert "unknown format 'pdf'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tables", "--runs", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "runs folder not found" in capsys.readouterr().err


def test_defaults_are_the_most_common_dep_values_with_paper_tie_breaks(tmp_path):
    from dep_lightning.results.registry import load_registry
    from dep_lightning.results.tables import resolve_defaults

    scores = {"Books": quality(0.3, 0.2, 5.0)}
    for name, ablation in {"a": {"k": 16, "refinement": "ae"}, "b": {"k": 8, "refinement": "sae"},
                           "c": {"k": 8, "retriever": "bm25"}, "d": {"k": 16, "retriever": "random"}}.items():
        write_run(tmp_path / name, scores, predictions=None, **ablation)
    write_run(tmp_path / "rag", scores, method="rag", predictions=None, k=2, refinement=None)  # not DEP: not counted
    defaults = resolve_defaults(load_registry([tmp_path]).groups)
    # k: 8 and 16 tie (2 runs each) -> the smaller number, not the smaller string;
    # refinement: sae 3 vs ae 1; retriever: recency 2, bm25 1, random 1.
    assert defaults == {"refinement": "sae", "embeddings": "his+diff", "with_text": True, "guidance": True,
                        "k": 8, "retriever": "recency"}
    assert resolve_defaults(load_registry([tmp_path]).groups, {"k": 16})["k"] == 16


def test_values_that_look_equal_share_the_mark(tmp_path):
    write_run(tmp_path / "dep", {"Books": quality(0.31001, 0.2, 5.0)}, predictions=None)
    write_run(tmp_path / "rag", {"Books": quality(0.31003, 0.1, 5.0)}, method="rag", predictions=None)
    write_run(tmp_path / "np", {"Books": quality(0.2, 0.1, 4.0)}, method="non_perso", predictions=None)
    make_tables([str(tmp_path)], out=tmp_path / "out", formats=("md",), figures=False, echo=lambda line: None)
    _, rows = markdown_rows(tmp_path / "out" / "table1.md")
    assert rows["DEP (ref.)"][:3] == ["**0.3100**", "**0.2000**", "**5.0000**"]
    assert rows["RAG"][:3] == ["**0.3100**", "<u>0.1000</u>", "**5.0000**"]
    assert rows["Non-Perso"][:3] == ["<u>0.2000</u>", "<u>0.1000</u>", "<u>4.0000</u>"]


def test_counterfactual_generations_leave_table1_for_the_conditions_table(tmp_path):
    """A copy baseline run again under ``swap`` (its manifest's ``data.condition``) is neither
    a second seed nor a second table 1 row: the conditions table pairs it with the same
    configuration under true, with a paired test against that row."""
    import json

    write_run(tmp_path / "copy", {"Books": quality(0.40, 0.30, 9.0)}, method="copy_recent", refinement=None,
              embeddings="none")
    write_run(tmp_path / "copy_swap", {"Books": quality(0.20, 0.10, 2.0)}, method="copy_recent", refinement=None,
              embeddings="none", predictions="garbage")
    path = tmp_path / "copy_swap" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["data"]["condition"] = "swap"
    path.write_text(json.dumps(manifest))
    # A counterfactual whose configuration has no run under true still gets its row.
    write_run(tmp_path / "rag_none", {"Books": quality(0.10, 0.05, 1.0)}, method="rag", refinement=None,
              embeddings="none", predictions=None)
    path = tmp_path / "rag_none" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["data"]["condition"] = "none"
    path.write_text(json.dumps(manifest))
    tables = make_tables([str(tmp_path)], out=tmp_path / "tables", echo=lambda line: None)
    by_name = {table.name: table for table in tables}
    copy_rows = [row for row in by_name["table1"].rows if row.key.startswith("copy_recent")]
    assert [(row.label, row.seeds) for row in copy_rows] == [("Copy-Recent", 1)]
    assert copy_rows[0].cells[1].mean == pytest.approx(0.30)
    assert not [row for row in by_name["table1"].rows if row.key.startswith("rag") and row.group is not None]
    conditions = by_name["conditions"]
    labels = [row.label for row in conditions.rows]
    assert labels == ["RAG (true)", "RAG (none)", "Copy-Recent (true)", "Copy-Recent (swap)"]
    rag_true, rag_none, copy_true, copy_swap = conditions.rows
    assert rag_true.group is None and "no rag run" in rag_true.missing and rag_none.cells[1].mean == pytest.approx(0.05)
    assert copy_swap.reference is copy_true and copy_true.group is copy_rows[0].group
    columns = [metric for _, metric in conditions.columns]
    meteor = columns.index("meteor")
    assert copy_true.cells[meteor].p_value is None
    # Per-sample METEOR is 0.10 under swap and 0.30 under true for all 8 samples: p = 1/1001.
    assert copy_swap.cells[meteor].mean == pytest.approx(0.10)
    assert copy_swap.cells[meteor].p_value == pytest.approx(1 / 1001)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tables" / "conditions.csv").read_text())))
    tested = [r for r in rows if r["p_value"]]
    assert tested and {r["reference"] for r in tested} == {copy_true.key}
    assert "vs the row's configuration under true" in (tmp_path / "tables" / "conditions.md").read_text()
