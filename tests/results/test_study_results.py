"""The committed study (docs/results/) regenerates: its tables equal what `tables` makes of its runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dep_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


STUDIES = [(RESULTS / "runs", "no_user", RESULTS / "tables"),
           (RESULTS / "runs", "rag", RESULTS / "tables" / "vs_rag"),
           (RESULTS / "long" / "runs", "no_user", RESULTS / "long" / "tables")]


@pytest.mark.parametrize("runs, reference, folder", STUDIES, ids=lambda v: str(v).rsplit("docs/results/", 1)[-1])
def test_committed_tables_regenerate_from_the_committed_runs(tmp_path, runs, reference, folder):
    if not runs.is_dir():
        pytest.skip(f"no committed runs in {runs}")
    main(["tables", "--runs", str(runs), "--out", str(tmp_path), "--reference", reference,
          "--format", "md,csv", "--no-figures"])
    committed = sorted(p.name for p in folder.glob("*.md"))
    assert "table1.md" in committed
    for name in committed:
        assert (tmp_path / name).read_text() == (folder / name).read_text(), name
    assert not any("checkpoints" in str(p) or p.suffix == ".ckpt" for p in runs.rglob("*"))
