"""notebooks/analysis.ipynb executes top to bottom on a small runs directory."""

import os
from pathlib import Path

import numpy as np
import pytest

from tests.results.runs import write_run

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def small_runs(root: Path) -> np.ndarray:
    scores = lambda base: {"Books": {"rouge1": base, "meteor": base / 2, "bleu": 10 * base},  # noqa: E731
                           "CDs_and_Vinyl": {"rouge1": base + 0.01, "meteor": base / 2, "bleu": 10 * base}}
    write_run(root / "rag", scores(0.15), method="rag", refinement=None, embeddings="none")
    for seed in (0, 1):
        write_run(root / f"dep-{seed}", scores(0.20 + seed / 100), seed=seed)
    write_run(root / "dep-ae", scores(0.18), refinement="ae")
    for k in (1, 8):
        write_run(root / f"dep-k{k}", scores(0.17 + k / 100), k=k)
    # SAE codes of the DEP run: 6 samples of 3 users, 16 units, user u0 always fires unit 3.
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 0.3, size=(6, 16)).astype(np.float32)
    users = np.array(["u0", "u0", "u1", "u1", "u2", "u2"])
    z[users == "u0", 3] = 0.9
    z[4, 7] = 0.8
    (root / "dep-0" / "analysis").mkdir()
    np.savez_compressed(root / "dep-0" / "analysis" / "latents.npz", z=z, user_id=users,
                        sample_id=np.array([f"Books/test/{i}" for i in range(6)]))
    return z


@pytest.mark.slow
def test_analysis_notebook_executes_on_a_small_runs_directory(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    z = small_runs(tmp_path / "runs")
    out = tmp_path / "tables"
    monkeypatch.setenv("DEP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DEP_TABLES_OUT", str(out))
    monkeypatch.setenv("DEP_RESAMPLES", "50")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()

    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                     for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "6 run(s)" in text
    assert "| DEP" in text and "RAG" in text  # table 1 rendered as Markdown
    assert "1 SAE run(s) with latent codes" in text
    firing = (z > 0.5).sum(axis=1)
    assert f"units firing per sample: mean {firing.mean():.1f}" in text
    assert f"units never firing: {16 - 2} of 16" in text
    assert "| u0 | 2 | 3 (0.90)" in text  # u0's top unit is unit 3
    for name in ("sae_latents.png", "figure_k_sweep.png", "figure_uniqueness.png", "table1.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
