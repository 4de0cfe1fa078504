"""`dep-lightning tables` on run directories with likelihood blocks: the personalization table and figure.

The likelihood blocks are written by the score command's own ``summarize`` from the same
per-sample rows that go to ``scores/test.jsonl``, so the table is checked against the
producer as well as against values worked out by hand below.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from dep_lightning.cli import main
from dep_lightning.data.errors import InputError
from dep_lightning.results.command import make_tables
from dep_lightning.results.registry import load_registry, load_run
from dep_lightning.results.stats import MetricSamples, bootstrap_ci
from tests.results.runs import manifest, write_run

NOT_RUN = "—"
ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ("Books", "CDs_and_Vinyl")
N = 16  # samples: 8 per category
TOKENS = [10 + j for j in range(N)]
QUALITY = {"Books": {"rouge1": 0.3, "meteor": 0.2, "bleu": 5.0},
           "CDs_and_Vinyl": {"rouge1": 0.25, "meteor": 0.15, "bleu": 4.0}}
HEADER = ["Method", "NLL true", "NLL swap", "NLL none", "swap - true [95% CI]", "none - true [95% CI]", "seeds"]
P_MIN = 1 / 1001  # the smallest p-value of the paired bootstrap with 1000 resamples


def sample_ids() -> list[str]:
    return [f"{category}/test/{i}" for category in CATEGORIES for i in range(N // len(CATEGORIES))]


def score_rows(per_token: dict[str, list[float]]) -> list[dict]:
    """scores/test.jsonl rows: per sample and condition, the summed NLL of a reference of TOKENS[j] tokens."""
    rows = []
    for j, sample_id in enumerate(sample_ids()):
        for condition, values in per_token.items():
            rows.append({"sample_id": sample_id, "user_id": f"u{j}", "category": sample_id.split("/")[0],
                         "condition": condition, "nll": values[j] * TOKENS[j], "tokens": TOKENS[j]})
    return rows


def add_likelihood(folder: Path, per_token: dict[str, list[float]], scores_file: bool = True) -> dict:
    """Merges the score command's likelihood block into ``folder``'s metrics.json (creating a
    score-only metrics.json when there is none) and writes scores/test.jsonl."""
    from dep_lightning.scoring import summarize

    rows = score_rows(per_token)
    block = summarize(rows, list(per_token))
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics["likelihood"] = block
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    if scores_file:
        (folder / "scores").mkdir(exist_ok=True)
        (folder / "scores" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return block


def dep_seed(seed: int) -> dict[str, list[float]]:
    """True NLL 2.0 + 0.1 seed (+0.05 on odd samples); swap adds 0.02 + 0.01 seed + 0.01 (j mod 4), none 0.1."""
    true = [2.0 + 0.1 * seed + 0.05 * (j % 2) for j in range(N)]
    return {"true": true, "swap": [t + 0.02 + 0.01 * seed + 0.01 * (j % 4) for j, t in enumerate(true)],
            "none": [t + 0.1 for t in true]}


NO_USER = {"true": dep_seed(0)["true"], "swap": dep_seed(0)["true"], "none": [t + 0.03 for t in dep_seed(0)["true"]]}
RAG = {"true": [2.3 + 0.02 * (j % 2) for j in range(N)],
       "swap": [2.3 + 0.02 * (j % 2) + (0.01 if j % 2 else -0.01) + 0.002 for j in range(N)]}
DEP_K1 = {"true": [2.2] * N, "swap": [2.2 + 0.008 * ((7 * j) % 5 - 1) for j in range(N)], "none": [2.25] * N}
PPLUG = {"true": [2.4] * N, "swap": [2.4 + 0.0032 * (j % 3) for j in range(N)]}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """DEP at the defaults (seeds 0 and 1 scored, seed 2 not), DEP with K=1 (one seed), No-User
    (swap identical to true), RAG (block but no scores/test.jsonl), Non-Perso (never scored) and
    a score-only PPlug run directory (manifest + likelihood block, no text metrics)."""
    root = tmp_path_factory.mktemp("runs")
    blocks = {}
    for seed in (0, 1, 2):
        write_run(root / "dep" / f"seed{seed}", QUALITY, seed=seed, predictions=None)
        if seed < 2:
            blocks[f"dep{seed}"] = add_likelihood(root / "dep" / f"seed{seed}", dep_seed(seed))
    write_run(root / "dep_k1", QUALITY, k=1, predictions=None)
    blocks["dep_k1"] = add_likelihood(root / "dep_k1", DEP_K1)
    write_run(root / "no_user", QUALITY, method="no_user", predictions=None)
    blocks["no_user"] = add_likelihood(root / "no_user", NO_USER)
    write_run(root / "rag", QUALITY, method="rag", predictions=None, refinement=None, embeddings="none")
    blocks["rag"] = add_likelihood(root / "rag", RAG, scores_file=False)
    write_run(root / "non_perso", QUALITY, method="non_perso", predictions=None, refinement=None, embeddings="none",
              with_text=False, k=0)
    (root / "pplug_score").mkdir()
    (root / "pplug_score" / "manifest.json").write_text(json.dumps(manifest("pplug", refinement=None)))
    blocks["pplug"] = add_likelihood(root / "pplug_score", PPLUG)
    out = tmp_path_factory.mktemp("tables")
    lines: list[str] = []
    tables = make_tables([str(root)], out=out, echo=lines.append)
    return {"root": root, "out": out, "lines": lines, "tables": tables, "blocks": blocks}


def markdown_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    return split[0], {cells[0]: cells[1:] for cells in split[2:]}


def signed(value: float) -> str:
    return f"{value:+.4f}"


def pooled_dep_swap_gains() -> np.ndarray:
    """DEP's per-sample swap gains averaged over its two scored seeds, from the rows as written."""
    per_seed = []
    for seed in (0, 1):
        rows = score_rows(dep_seed(seed))
        pt = {c: np.array([r["nll"] / r["tokens"] for r in rows if r["condition"] == c]) for c in ("true", "swap")}
        per_seed.append(pt)
    return np.mean([p["swap"] for p in per_seed], axis=0) - np.mean([p["true"] for p in per_seed], axis=0)


def recorded(block: dict, condition: str) -> str:
    gain = block["overall"]["gains"][condition]
    mark = "†" if gain["p_value"] < 0.05 else ""
    return f"{signed(gain['gain'])}{mark} [{signed(gain['gain_ci95'][0])}, {signed(gain['gain_ci95'][1])}]"


def test_personalization_cells(study):
    header, rows = markdown_rows(study["out"] / "personalization.md")
    assert header == HEADER
    # Rows: table 1's method order; the DEP group at the defaults (K=4: 3 of 4 DEP runs) first.
    assert list(rows) == ["RAG", "PPlug", "No-User", "DEP [ablation.k=4]", "DEP [ablation.k=1]"]
    interval = bootstrap_ci(MetricSamples("gain", pooled_dep_swap_gains()), 1000, 0)
    # DEP: NLL true (2.025 + 2.125) / 2, std 0.1 / sqrt(2); swap 2.06 / 2.17; none 2.125 / 2.225;
    # swap gain 0.035 / 0.045, every per-sample gain > 0 and < 2 x mean -> p = 1/1001;
    # none gain exactly 0.1 in both seeds (std 0, interval [0.1, 0.1], p = 1/1001).
    assert rows["DEP [ablation.k=4]"] == [
        "2.0750 ± 0.0707", "2.1150 ± 0.0778", "2.1750 ± 0.0707",
        f"+0.0400 ± 0.0071† [{signed(interval.low)}, {signed(interval.high)}]",
        "+0.1000 ± 0.0000† [+0.1000, +0.1000]", "2"]
    # No-User: swap identical to true, so the gain is exactly 0 with p = 1 (no †).
    assert rows["No-User"] == ["2.0250", "2.0250", "2.0550", "+0.0000 [+0.0000, +0.0000]",
                               "+0.0300† [+0.0300, +0.0300]", "1"]
    # RAG: no scores/test.jsonl, one seed: metrics.json's own interval and p-value; none not scored.
    assert rows["RAG"] == ["2.3100", "2.3120", NOT_RUN, recorded(study["blocks"]["rag"], "swap"), NOT_RUN, "1"]
    # One seed with scores/test.jsonl: recomputed with the same resamples and seed as the score command.
    # Swap: 2.2 + 0.008 x (mean of (7j mod 5) - 1 = 0.875) = 2.207.
    assert rows["DEP [ablation.k=1]"] == ["2.2000", "2.2070", "2.2500", recorded(study["blocks"]["dep_k1"], "swap"),
                                          recorded(study["blocks"]["dep_k1"], "none"), "1"]
    assert rows["PPlug"][:3] == ["2.4000", "2.4030", NOT_RUN]  # 2.4 + 0.0032 x mean(j mod 3) = 0.0032 x 15/16
    assert "Non-Perso" not in rows  # never scored: not in this table


def test_recomputed_interval_equals_the_score_command_for_one_seed(study):
    table = next(t for t in study["tables"] if t.name == "personalization")
    row = next(r for r in table.rows if r.label == "DEP [ablation.k=1]")
    for column, cell in zip(table.columns, row.cells):
        if column[1].startswith("gain_"):
            gain = study["blocks"]["dep_k1"]["overall"]["gains"][column[1][len("gain_"):]]
            # The same per-token values, resamples and seed: equal up to float summation order.
            assert cell.mean == pytest.approx(gain["gain"], abs=1e-12)
            assert [cell.low, cell.high] == pytest.approx(gain["gain_ci95"], abs=1e-12)
            assert cell.p_value == gain["p_value"] and cell.ci_n == N and cell.note is None


def test_csv_values(study):
    lines = list(csv.DictReader(io.StringIO((study["out"] / "personalization.csv").read_text())))
    assert {line["table"] for line in lines} == {"personalization"}
    assert len(lines) == 5 * 5  # five rows x (three NLL + two gain) columns
    cell = {(line["row"], line["metric"]): line for line in lines}
    dep = cell["DEP [ablation.k=4]", "gain_swap"]
    interval = bootstrap_ci(MetricSamples("gain", pooled_dep_swap_gains()), 1000, 0)
    assert float(dep["mean"]) == pytest.approx(0.04, abs=1e-12)
    assert float(dep["std"]) == pytest.approx(0.01 / np.sqrt(2), abs=1e-12)
    assert float(dep["ci_low"]) == pytest.approx(interval.low, abs=1e-12)
    assert float(dep["ci_high"]) == pytest.approx(interval.high, abs=1e-12)
    assert 0.025 - 1e-12 <= interval.low < 0.04 < interval.high <= 0.055 + 1e-12  # per-sample gains 0.025 … 0.055
    assert float(dep["p_value"]) == pytest.approx(P_MIN) and dep["reference"] == "true"
    assert dep["seeds"] == "2" and dep["ci_n"] == str(N) and dep["category"] == "overall"
    root = study["root"]
    assert dep["runs"] == f"{root / 'dep' / 'seed0'};{root / 'dep' / 'seed1'}"  # seed 2 has no likelihood block
    nll = cell["DEP [ablation.k=4]", "nll_true"]
    assert float(nll["mean"]) == pytest.approx(2.075, abs=1e-12) and nll["p_value"] == "" and nll["reference"] == ""
    assert float(nll["ci_low"]) < 2.075 < float(nll["ci_high"])  # NLL intervals: CSV only
    rag = cell["RAG", "gain_swap"]
    gain = study["blocks"]["rag"]["overall"]["gains"]["swap"]
    assert [float(rag["ci_low"]), float(rag["ci_high"])] == gain["gain_ci95"]
    assert float(rag["p_value"]) == gain["p_value"]
    assert "no scores/test.jsonl" in rag["note"] and "as recorded in metrics.json" in rag["note"]
    assert "no NLL none in the likelihood block" in cell["RAG", "nll_none"]["empty_reason"]
    no_user = cell["No-User", "gain_swap"]
    assert float(no_user["mean"]) == 0.0 and float(no_user["p_value"]) == 1.0


def test_latex_and_notes(study):
    tex = (study["out"] / "personalization.tex").read_text()
    assert r"No-User & 2.0250 & 2.0250 & 2.0550 & +0.0000 [+0.0000, +0.0000] {\scriptsize ($p=1.000$)} & " \
           r"+0.0300 [+0.0300, +0.0300] {\scriptsize ($p<0.001$)} & 1 \\" in tex
    assert r"swap - true [95\% CI]" in tex
    md = (study["out"] / "personalization.md").read_text()
    assert "unit: nats per target token" in md
    assert "† p < 0.05: two-sided paired bootstrap of the condition against true" in md
    assert "(1000 resamples, seed 0)" in md
    assert f"DEP [ablation.k=4]: 1 run(s) of this configuration without a likelihood block, not in this row: " \
           f"{study['root'] / 'dep' / 'seed2'}" in md


def test_printed_report(study):
    lines = study["lines"]
    assert lines[0] == "7 run(s) in 5 configuration(s) and 1 score-only run(s) (personalization table only)"
    assert "### " + "Personalization: likelihood of the reference with the user's own history and without it" in \
        "\n".join(lines)
    rag = study["root"] / "rag"
    assert f"  personalization · RAG · overall NLL none: no NLL none in the likelihood block (conditions scored: " \
           f"{rag}: true, swap)" in lines
    assert f"  personalization · RAG · overall none - true [95% CI]: no none gain in the likelihood block " \
           f"(conditions scored: {rag}: true, swap)" in lines
    assert f"  {rag}: likelihood block without scores/test.jsonl; the personalization table shows the intervals " \
           f"recorded in metrics.json (one seed only)" in lines
    assert any(line.startswith("  figure_personalization: one seed (hollow marker") and "No-User" in line
               and "DEP [ablation.k=4]" not in line for line in lines)
    # The score-only PPlug run is not a table-1 run.
    table1 = study["tables"][0]
    assert next(row for row in table1.rows if row.key == "pplug").group is None


def test_figure_is_written(study):
    import matplotlib.image

    path = study["out"] / "figure_personalization.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_figure_draws_each_interval(study, tmp_path, monkeypatch):
    import matplotlib.axes

    from dep_lightning.results.figures import personalization_figure

    drawn = []
    plot = matplotlib.axes.Axes.plot

    def recording(self, *args, **kwargs):
        drawn.append((list(args[0]), kwargs.get("marker")))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    table = next(t for t in study["tables"] if t.name == "personalization")
    notes = personalization_figure(table, tmp_path / "p.png")
    column = table.columns.index((None, "gain_swap"))
    intervals = [[row.cells[column].low, row.cells[column].high] for row in table.rows]
    points = [[row.cells[column].mean] for row in table.rows]
    assert [x for x, marker in drawn if marker == "|"] == intervals
    assert [x for x, marker in drawn if marker == "o"] == points
    assert notes == ["figure_personalization: one seed (hollow marker; interval over that seed's samples): RAG, "
                     "PPlug, No-User, DEP [ablation.k=1]"]


def test_without_intervals_one_seed_rows_show_the_recorded_ones(study):
    tables = make_tables([str(study["root"])], out=None, intervals=False, echo=lambda line: None)
    table = next(t for t in tables if t.name == "personalization")
    column = table.columns.index((None, "gain_swap"))
    cells = {row.label: row.cells[column] for row in table.rows}
    dep = cells["DEP [ablation.k=4]"]
    assert dep.low is None and dep.p_value is None and "no interval for several seeds" in dep.note
    gain = study["blocks"]["no_user"]["overall"]["gains"]["swap"]
    assert [cells["No-User"].low, cells["No-User"].high] == gain["gain_ci95"]


def test_no_likelihood_block_no_table_and_no_figure(tmp_path):
    write_run(tmp_path / "runs" / "dep", QUALITY, predictions=None)
    write_run(tmp_path / "runs" / "rag", QUALITY, method="rag", predictions=None, refinement=None)
    lines: list[str] = []
    tables = make_tables([str(tmp_path / "runs")], out=tmp_path / "out", resamples=10, echo=lines.append)
    assert "personalization" not in {t.name for t in tables}
    assert not list((tmp_path / "out").glob("*personalization*"))
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"figure_k_sweep.png", "figure_uniqueness.png"}
    assert "  personalization: no run has a likelihood block (dep-lightning score), so no personalization table " \
           "or figure" in lines


def test_committed_study_has_no_likelihood_blocks():
    """The committed METEOR study's runs were not scored, so `make study-v1` adds no personalization
    files to its tables (the scored study, docs/results/scored, has its own)."""
    results = ROOT / "docs" / "results"
    registry = load_registry([results / "runs", results / "long" / "runs"], predictions=False)
    assert registry.runs and all(run.likelihood is None for run in registry.runs)
    for tables in (results / "tables", results / "long" / "tables"):
        assert tables.is_dir() and not [p for p in tables.rglob("*personalization*")]


def test_scores_file_must_match_the_likelihood_block(tmp_path):
    folder = write_run(tmp_path / "run", QUALITY, predictions=None)
    add_likelihood(folder, dep_seed(0))
    path = folder / "scores" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert load_run(folder).likelihoods.ids == sorted(sample_ids())

    def write(changed):
        path.write_text("".join(json.dumps(r) + "\n" for r in changed))

    write([{**r, "condition": "his_only"} if i == 0 else r for i, r in enumerate(rows)])
    with pytest.raises(InputError, match=r"test.jsonl:1: unknown condition, field 'condition', value 'his_only'"):
        load_run(folder)
    write([{**r, "tokens": r["tokens"] + 1} if r["condition"] == "swap" and i < 3 else r for i, r in enumerate(rows)])
    with pytest.raises(InputError, match="token count differs between conditions"):
        load_run(folder)
    write(rows[2:])  # the first sample only under "none"
    with pytest.raises(InputError, match="conditions cover different samples"):
        load_run(folder)
    write(rows[6:])  # 14 samples, but metrics.json says 16
    with pytest.raises(InputError, match="sample count differs from metrics.json"):
        load_run(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["likelihood"]["overall"]["gains"]["swap"]["gain_ci95"] = [0.1]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(InputError, match=r"field 'likelihood.overall.gains.swap.gain_ci95'"):
        load_run(folder)


def test_export_keeps_the_scores(tmp_path):
    folder = write_run(tmp_path / "runs" / "dep", QUALITY, predictions=None)
    add_likelihood(folder, dep_seed(0))
    main(["export", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "shared")])
    assert (tmp_path / "shared" / "dep" / "scores" / "test.jsonl").read_bytes() == \
        (folder / "scores" / "test.jsonl").read_bytes()
    for source, target in ((tmp_path / "runs", tmp_path / "t1"), (tmp_path / "shared", tmp_path / "t2")):
        make_tables([str(source)], out=target, formats=("md",), figures=False, resamples=50, echo=lambda line: None)
    first = (tmp_path / "t1" / "personalization.md").read_text()
    assert "[+" in first and "no scores/test.jsonl" not in first
    assert first.replace(str(tmp_path / "runs"), "") == \
        (tmp_path / "t2" / "personalization.md").read_text().replace(str(tmp_path / "shared"), "")
