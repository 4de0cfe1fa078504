"""The registry of methods (``dep_lightning/methods.py``): the declarations of the built-in
methods, what the tables derive from them, and a new method added in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from dep_lightning import methods
from dep_lightning.methods import MethodSpec, register
from tests.results.runs import write_run
from tests.results.test_tables import markdown_rows, quality


@pytest.fixture
def registry(monkeypatch) -> methods.MethodRegistry:
    """The process's registry for one test: methods a test declares are gone after it.

    Copied once the built-in methods are declared (importing their modules declares them,
    and that happens once per process)."""
    scratch = methods.registered().copy()
    monkeypatch.setattr(methods, "REGISTRY", scratch)
    return scratch


def test_builtin_methods_in_table_order():
    registry = methods.registered()
    assert registry.names("method") == ("non_perso", "rag", "pag", "dpl", "pplug", "no_user", "dep")
    assert registry.names("reference") == ("copy_recent", "copy_concat")
    assert registry.declared_by("rag") == "dep_lightning.models.base.PromptingModule"
    assert registry.declared_by("copy_concat") == "dep_lightning.models.copy.CopyBaseline"


def test_a_class_with_one_method_is_that_method():
    from dep_lightning.models import DEPModule, DPLModule, NoUserControl, PAGModule, PPlugModule

    assert [c.method for c in (PAGModule, DPLModule, PPlugModule, NoUserControl, DEPModule)] == \
        ["pag", "dpl", "pplug", "no_user", "dep"]


def test_the_tables_names_derive_from_the_registry():
    from dep_lightning.results import tables

    registry = methods.registered()
    assert tables.METHODS == registry.names("method")
    assert tables.REFERENCE_METHODS == registry.names("reference")
    assert tables.METHOD_LABELS == {spec.name: spec.label for spec in registry}
    assert tables.METHOD_LABELS["no_user"] == "No-User"


def test_a_name_is_declared_once(registry):
    from dep_lightning.models import CopyBaseline

    with pytest.raises(ValueError, match="'dep' is already registered by dep_lightning.models.dep_module.DEPModule"):
        @register(MethodSpec("dep", "DEP again", order=1))
        class Again(CopyBaseline):
            pass

    with pytest.raises(ValueError, match="sets method = 'one' but registers 'other'"):
        @register(MethodSpec("other", "Other"))
        class Mismatch(CopyBaseline):
            method = "one"

    with pytest.raises(ValueError, match="row must be one of"):
        MethodSpec("x", "X", row="baseline")


def test_a_new_method_declared_in_one_place_reaches_table_1(registry, tmp_path, monkeypatch):
    from dep_lightning.models import DEPModule
    from dep_lightning.results import tables
    from dep_lightning.results.command import make_tables

    # The one place: the class and its declaration.
    @register(MethodSpec("dep_frozen_refiner", "DEP-FR", order=65))
    class FrozenRefinerDEP(DEPModule):
        """DEP whose refiner is not trained (the declaration is all a new method needs to be tabled)."""

    assert FrozenRefinerDEP(backbone="tiny", embedding_dim=32, latent_dim=8).method_info()["method"] == \
        "dep_frozen_refiner"  # what its runs' manifest.json records
    assert registry.get("dep_frozen_refiner") == MethodSpec("dep_frozen_refiner", "DEP-FR", "method", 65)
    assert tables.METHODS == ("non_perso", "rag", "pag", "dpl", "pplug", "no_user", "dep_frozen_refiner", "dep")
    assert tables.METHOD_LABELS["dep_frozen_refiner"] == "DEP-FR"

    runs = tmp_path / "runs"
    write_run(runs / "dep", {"Books": quality(0.37, 0.30, 13.0), "CDs_and_Vinyl": quality(0.31, 0.23, 6.0)})
    write_run(runs / "frozen", {"Books": quality(0.35, 0.27, 12.0), "CDs_and_Vinyl": quality(0.30, 0.21, 5.5)},
              method="dep_frozen_refiner")
    out = tmp_path / "tables"
    make_tables([str(runs)], out=out, formats=["md"], intervals=False, figures=False, echo=lambda line: None)
    _, rows = markdown_rows(Path(out) / "table1.md")
    assert list(rows) == ["Non-Perso", "RAG", "PAG", "DPL", "PPlug", "No-User", "DEP-FR", "DEP (ref.)",
                          "Copy-Recent", "Copy-Concat"]
    assert rows["DEP-FR"][:3] == ["<u>0.3500</u>", "<u>0.2700</u>", "<u>12.0000</u>"]  # ranked: second best

    monkeypatch.undo()  # the process's registry never saw the method
    assert "dep_frozen_refiner" not in methods.registered()
    assert "dep_frozen_refiner" not in tables.METHODS
