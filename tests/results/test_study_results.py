"""The committed study (docs/results/) regenerates: its tables equal what `tables` makes of its runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dep_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


@pytest.mark.skipif(not (RESULTS / "runs").is_dir(), reason="no committed study runs")
@pytest.mark.parametrize("reference, folder", [("no_user", RESULTS / "tables"), ("rag", RESULTS / "tables" / "vs_rag")])
def test_committed_tables_regenerate_from_the_committed_runs(tmp_path, reference, folder):
    main(["tables", "--runs", str(RESULTS / "runs"), "--out", str(tmp_path), "--reference", reference,
          "--format", "md,csv", "--no-figures"])
    committed = sorted(p.name for p in folder.glob("*.md"))
    assert "table1.md" in committed
    for name in committed:
        assert (tmp_path / name).read_text() == (folder / name).read_text(), name
    assert not any("checkpoints" in str(p) or p.suffix == ".ckpt" for p in (RESULTS / "runs").rglob("*"))
