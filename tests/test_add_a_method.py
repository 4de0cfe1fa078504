"""The recipes of docs/architecture.md, followed for real: a new method and a new ablation axis,
each written in this module only, trained by ``dep-lightning fit`` on the tiny backbone and shown
as filled rows by ``dep-lightning tables``. No file of the package is edited for either.

* The method: :class:`FrozenRefinerDEP`, DEP whose refiner keeps its initial weights (only the
  projectors learn), declared with one ``MethodSpec``.
* The axis: ``target_cap`` (data side), the target review cut to this many tokens; one
  ``Axis`` entry (with a table of its own) and the code that reads it,
  :class:`TargetCapDataModule`, which applies the cap and reports it in ``describe()``.

Both are registered for the one test only (the process's registries are restored after it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from dep_lightning import axes, methods
from dep_lightning.axes import Axis
from dep_lightning.cli import main
from dep_lightning.data.datamodule import DEPDataModule
from dep_lightning.data.prompt import PromptConfig
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.dep_module import DEPModule
from tests.helpers import tiny_override
from tests.results.test_tables import NOT_RUN, markdown_rows

ROOT = Path(__file__).resolve().parents[1]

# -- the new method: a class and its declaration ------------------------------------------------

FROZEN_REFINER = MethodSpec("dep_frozen_refiner", "DEP-FR", order=65)


class FrozenRefinerDEP(DEPModule):
    """DEP whose refiner stays at its initialisation: only the two projectors are trained."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.refiner.requires_grad_(False)


# -- the new axis: its registry entry and the code that reads it ---------------------------------

TARGET_CAP = Axis("target_cap", "data", 16, ((8, "8 target tokens"), (16, "16 target tokens")), required=False,
                  doc="target reviews cut to this many tokens", table="Target length cap")


class TargetCapDataModule(DEPDataModule):
    """The DataModule with the target review cut to ``target_cap`` tokens, reported as the axis."""

    def __init__(self, target_cap: int = 16, prompt: PromptConfig = PromptConfig(), **kwargs):
        super().__init__(prompt=replace(prompt, max_target_tokens=target_cap), **kwargs)
        self.target_cap = target_cap

    def describe(self):
        described = super().describe()
        described["ablation"]["target_cap"] = self.target_cap
        return described


@pytest.fixture
def registries(monkeypatch):
    """The method and the axis, registered for this test only."""
    monkeypatch.setattr(methods, "REGISTRY", methods.registered().copy())
    register(FROZEN_REFINER)(FrozenRefinerDEP)
    monkeypatch.setitem(axes.BY_KEY, TARGET_CAP.key, TARGET_CAP)
    yield
    monkeypatch.undo()
    assert "dep_frozen_refiner" not in methods.registered() and "target_cap" not in axes.BY_KEY


def fit(tmp_path: Path, name: str, config: dict) -> Path:
    """``dep-lightning fit`` of the quickstart with the tiny models and ``config`` on top; the run directory."""
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", limits=(4, 2, 6),
                             save_dir=tmp_path / "runs")
    extra = tmp_path / f"{name}.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"logger": {"init_args": {"name": name}}, "max_steps": 2},
                                     **config}))
    main(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(override),
          "--config", str(extra)])
    return tmp_path / "runs" / name / "version_0"


def filled(cells: list[str]) -> bool:
    """A row whose first three cells (R-1, METEOR, BLEU of the first category) hold numbers."""
    return all(cell not in ("", NOT_RUN) for cell in cells[:3])


@pytest.mark.slow
def test_a_method_and_an_axis_written_in_one_module_reach_the_tables(registries, tmp_path, capsys):
    frozen = fit(tmp_path, "frozen", {"model": {"class_path": f"{__name__}.FrozenRefinerDEP"}})
    manifest = json.loads((frozen / "manifest.json").read_text())
    assert manifest["method"] == "dep_frozen_refiner" and manifest["ablation"]["refinement"] == "sae"
    for cap in (8, 16):
        run = fit(tmp_path, f"cap{cap}", {"data": {"class_path": f"{__name__}.TargetCapDataModule",
                                                   "init_args": {"target_cap": cap}}})
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["method"] == "dep" and manifest["ablation"]["target_cap"] == cap

    out = tmp_path / "tables"
    main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(out), "--format", "md", "--no-figures",
          "--resamples", "50"])
    _, table1 = markdown_rows(out / "table1.md")
    assert "DEP-FR" in table1 and filled(table1["DEP-FR"]), table1
    assert list(table1).index("No-User") < list(table1).index("DEP-FR") < list(table1).index("DEP (ref.)")
    _, capped = markdown_rows(out / "axis_target_cap.md")
    assert [label for label in capped if "target tokens" in label] == ["8 target tokens", "16 target tokens (ref.)"]
    assert all(filled(cells) for label, cells in capped.items() if "target tokens" in label), capped
    assert "Target length cap" in (out / "axis_target_cap.md").read_text()
