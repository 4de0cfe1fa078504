"""``dep-lightning export``: run directories copied without checkpoints; tables read the copy."""

from __future__ import annotations

from pathlib import Path

from dep_lightning.cli import main
from tests.results.runs import write_run


def _runs(root: Path) -> Path:
    write_run(root / "table3" / "sae", {"Books": {"rouge1": 0.37, "meteor": 0.30, "bleu": 13.0}})
    write_run(root / "methods" / "rag", {"Books": {"rouge1": 0.34, "meteor": 0.21, "bleu": 6.8}}, method="rag",
              predictions="garbage", refinement=None, embeddings="none")
    for run in ("table3/sae", "methods/rag"):
        (root / run / "checkpoints").mkdir()
        (root / run / "checkpoints" / "last.ckpt").write_bytes(b"weights" * 100)
        (root / run / "config.yaml").write_text("seed_everything: 0\n")
        (root / run / "wandb").mkdir()
        (root / run / "wandb" / "debug.log").write_text("log")
    (root / "table3" / "sae" / "analysis").mkdir()
    (root / "table3" / "sae" / "analysis" / "latents.npz").write_bytes(b"npz")
    return root


def test_export_copies_registry_files_and_leaves_checkpoints(tmp_path, capsys):
    runs = _runs(tmp_path / "runs")
    out = tmp_path / "shared"
    main(["export", "--runs", str(runs), "--out", str(out)])
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == [
        "methods/rag/config.yaml", "methods/rag/manifest.json", "methods/rag/metrics.json",
        "methods/rag/predictions/test.jsonl",
        "table3/sae/analysis/latents.npz", "table3/sae/config.yaml", "table3/sae/manifest.json",
        "table3/sae/metrics.json", "table3/sae/predictions/test.jsonl",
    ]
    for name in copied:
        assert (out / name).read_bytes() == (runs / name).read_bytes()
    assert "export: 2 run(s)" in capsys.readouterr().out


def test_tables_from_the_export_equal_tables_from_the_runs(tmp_path):
    runs = _runs(tmp_path / "runs")
    out = tmp_path / "shared"
    main(["export", "--runs", str(runs), "--out", str(out)])
    for source, target in ((runs, tmp_path / "t1"), (out, tmp_path / "t2")):
        main(["tables", "--runs", str(source), "--out", str(target), "--format", "md", "--no-figures"])
    first = sorted(p.name for p in (tmp_path / "t1").glob("*.md"))
    assert first and first == sorted(p.name for p in (tmp_path / "t2").glob("*.md"))
    for name in first:
        assert (tmp_path / "t1" / name).read_text().replace(str(runs), "") == \
            (tmp_path / "t2" / name).read_text().replace(str(out), "")


def test_export_leaves_out_runs_not_finished(tmp_path, capsys):
    """A run a live grid holds, and one that scores after its fit without a likelihood block yet,
    are skipped with a note; once scored and released, the same run is exported."""
    import json
    import os

    runs = _runs(tmp_path / "runs")
    sae, rag = runs / "table3" / "sae", runs / "methods" / "rag"
    (sae / "config.yaml").write_text("seed_everything: 0\nscore_after_fit: [true, swap, none]\n")
    (rag.parent / f".{rag.name}.running").write_text(f"{os.getpid()}\n")  # held by this live process
    out = tmp_path / "shared"
    main(["export", "--runs", str(runs), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"export: {sae}: not finished, scores after its fit and has no likelihood block yet" in printed
    assert f"export: {rag}: not finished, a grid (pid {os.getpid()}) is running it now; skipped" in printed
    assert not out.exists() or not any(out.rglob("*.json"))

    metrics = json.loads((sae / "metrics.json").read_text())
    (sae / "metrics.json").write_text(json.dumps({**metrics, "likelihood": {"conditions": ["true"]}}))
    (rag.parent / f".{rag.name}.running").unlink()
    main(["export", "--runs", str(runs), "--out", str(out)])
    assert (out / "table3" / "sae" / "metrics.json").is_file() and (out / "methods" / "rag" / "metrics.json").is_file()
