"""W&B run records convert to the same registry records as run directories; figures are PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from dep_lightning.data.errors import InputError
from dep_lightning.results.figures import k_sweep_figure, uniqueness_figure
from dep_lightning.results.registry import load_registry, load_run
from dep_lightning.results.tables import build_tables, ordered_categories, resolve_defaults
from dep_lightning.results.wandb_source import WandbRunData, load_wandb_registry, run_from_wandb
from tests.results.runs import write_run

SCORES = {"Books": {"rouge1": 0.3, "meteor": 0.2, "bleu": 5.0}, "CDs_and_Vinyl": {"rouge1": 0.2, "meteor": 0.1,
                                                                                  "bleu": 3.0}}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def logged_summary(run: Path) -> dict:
    """The summary a W&B logger holds after a test run: test/<metric>, test/hygiene/<metric>."""
    metrics = json.loads((run / "metrics.json").read_text())
    summary = {f"test/{k}": v for k, v in metrics["overall"].items() if k != "n"}
    summary.update({f"test/hygiene/{k}": v for k, v in metrics["hygiene"].items()})
    summary["_runtime"] = 12.5
    return summary


def test_wandb_run_with_uploaded_files_equals_the_run_directory(tmp_path):
    folder = write_run(tmp_path / "run", SCORES, seed=3)
    data = WandbRunData("me/dep/abc123", {"manifest": json.loads((folder / "manifest.json").read_text()),
                                          "trainer": {"max_epochs": 1}},
                        logged_summary(folder),
                        {"metrics.json": folder / "metrics.json",
                         "predictions/test.jsonl": folder / "predictions" / "test.jsonl"})
    remote, local = run_from_wandb(data), load_run(folder)
    assert remote.source == "W&B run me/dep/abc123"
    assert remote.manifest == local.manifest and remote.metrics == local.metrics
    assert remote.samples.ids == local.samples.ids
    assert np.array_equal(remote.samples.scores["meteor"], local.samples.scores["meteor"])
    assert remote.group_key == local.group_key and remote.notes == []


def test_wandb_run_without_files_has_overall_metrics_only(tmp_path):
    folder = write_run(tmp_path / "run", SCORES)
    run = run_from_wandb(WandbRunData("me/dep/x", {"manifest": json.loads((folder / "manifest.json").read_text())},
                                      logged_summary(folder)))
    assert run.metrics["categories"] == {}
    assert run.score(None, "meteor") == pytest.approx(0.15)
    assert run.score(None, "copy_rate") == pytest.approx(0.125)
    assert run.score("Books", "meteor") is None and run.samples is None
    assert any("metrics.json not uploaded" in note for note in run.notes)


def test_wandb_run_errors_name_the_run_and_field(tmp_path):
    folder = write_run(tmp_path / "run", SCORES, predictions=None)
    manifest = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(InputError, match=r"W&B run me/dep/x: missing field, field 'config.manifest'"):
        run_from_wandb(WandbRunData("me/dep/x", {"lr": 1e-5}, logged_summary(folder)))
    manifest["ablation"]["k"] = -1
    with pytest.raises(InputError, match=r"W&B run me/dep/x \(config.manifest\): .*field 'ablation.k'"):
        run_from_wandb(WandbRunData("me/dep/x", {"manifest": manifest}, logged_summary(folder)))
    manifest["ablation"]["k"] = 4
    with pytest.raises(InputError, match=r"field 'summary.test/meteor'"):
        run_from_wandb(WandbRunData("me/dep/x", {"manifest": manifest}, {"_runtime": 3}))
    with pytest.raises(InputError, match=r"field 'summary.test/bleu', value 'NaN'"):
        run_from_wandb(WandbRunData("me/dep/x", {"manifest": manifest}, {"test/bleu": "NaN"}))


def test_wandb_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(InputError, match="W&B is offline.*wandb sync.*--runs"):
        load_wandb_registry("me/dep")
    with pytest.raises(InputError, match="expected ENTITY/PROJECT"):
        load_wandb_registry("dep")


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_figures_are_valid_pngs(tmp_path):
    uniqueness = {"unique": {"n": 8, "rouge1": 0.3, "meteor": 0.25, "bleu": 6.0},
                  "non_unique": {"n": 8, "rouge1": 0.28, "meteor": 0.2, "bleu": 5.0}}
    for k in (1, 2, 4):
        for seed in (0, 1):
            write_run(tmp_path / "runs" / f"k{k}_s{seed}", SCORES, seed=seed, k=k, predictions=None,
                      uniqueness=uniqueness)
    write_run(tmp_path / "runs" / "rag", SCORES, method="rag", predictions=None, uniqueness=uniqueness)
    registry = load_registry([tmp_path / "runs"])
    defaults = resolve_defaults(registry.groups)
    notes = k_sweep_figure(registry.groups, defaults, ordered_categories(registry.groups), tmp_path / "k.png")
    assert notes == []
    tables, _ = build_tables(registry)
    notes = uniqueness_figure(tables[0].rows, tmp_path / "u.png")
    assert notes == ["figure_uniqueness: one seed, no error bar: RAG"]
    assert_png(tmp_path / "k.png")
    assert_png(tmp_path / "u.png")


def test_figures_without_data_are_still_written_with_a_note(tmp_path):
    registry = load_registry([tmp_path])  # no runs
    notes = k_sweep_figure(registry.groups, {}, ordered_categories(registry.groups), tmp_path / "k.png")
    assert notes and "fewer than two K values" in notes[0]
    notes = uniqueness_figure([], tmp_path / "u.png")
    assert notes == ["figure_uniqueness: no run with uniqueness halves"]
    assert_png(tmp_path / "k.png")
    assert_png(tmp_path / "u.png")


def test_single_seed_points_get_no_error_bar_and_a_note(tmp_path, monkeypatch):
    import matplotlib.axes

    uniqueness = {"unique": {"n": 8, "rouge1": 0.3, "meteor": 0.25, "bleu": 6.0},
                  "non_unique": {"n": 8, "rouge1": 0.28, "meteor": 0.2, "bleu": 5.0}}
    for k, seeds in ((1, (0, 1)), (2, (0,))):
        for seed in seeds:
            write_run(tmp_path / "runs" / f"k{k}_s{seed}", SCORES, seed=seed, k=k, predictions=None,
                      uniqueness=uniqueness)
    write_run(tmp_path / "runs" / "rag", SCORES, method="rag", predictions=None, uniqueness=uniqueness)
    registry = load_registry([tmp_path / "runs"])
    defaults = resolve_defaults(registry.groups)
    drawn = []
    errorbar = matplotlib.axes.Axes.errorbar

    def recording(self, x, y, yerr=None, **kwargs):
        drawn.append(list(yerr))
        return errorbar(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", recording)
    notes = k_sweep_figure(registry.groups, defaults, ordered_categories(registry.groups), tmp_path / "k.png")
    assert notes == ["figure_k_sweep: one seed, no error bar: K=2"]
    # K=1 has two seeds with equal scores (std 0); K=2 has one seed (NaN: nothing drawn).
    assert drawn and all(errs[0] == 0.0 and np.isnan(errs[1]) for errs in drawn)
    tables, _ = build_tables(registry)
    notes = uniqueness_figure(tables[0].rows, tmp_path / "u.png")
    # Table 1's DEP row is the two-seed K=1 group (K=1 is the most common K among runs).
    assert notes == ["figure_uniqueness: one seed, no error bar: RAG"]
    assert_png(tmp_path / "k.png")
    assert_png(tmp_path / "u.png")
