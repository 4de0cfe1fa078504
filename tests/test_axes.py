"""The ablation axes (dep_lightning/axes.py) agree with the code that writes and reads them."""

import typing

from dep_lightning.axes import ABLATION_KEYS, AXES, BY_KEY, PAPER_DEFAULTS
from dep_lightning.data.retrieval import RETRIEVERS
from dep_lightning.models.dep_module import DEPModule, Refinement
from dep_lightning.results import tables
from tests.helpers import small_datamodule


def test_every_axis_the_datamodule_describes_and_no_other(tmp_path):
    described = small_datamodule(tmp_path).describe()["ablation"]
    assert set(described) == {a.key for a in AXES if a.side == "data"}


def test_the_model_side_axes_are_what_methods_report():
    info = DEPModule(backbone="tiny", embedding_dim=32, latent_dim=8).method_info()
    assert set(info) - {"method"} == {a.key for a in AXES if a.side == "model"}


def test_axis_values_cover_the_code_that_takes_them():
    assert set(BY_KEY["retriever"].values) == set(RETRIEVERS)
    assert set(BY_KEY["refinement"].values) == set(typing.get_args(Refinement))
    assert ABLATION_KEYS == ("refinement", "embeddings", "with_text", "guidance", "k", "retriever")
    assert PAPER_DEFAULTS == {"refinement": "sae", "embeddings": "his+diff", "with_text": True, "guidance": True,
                              "retriever": "recency"}


def test_the_ablation_tables_rows_come_from_the_axes_in_the_papers_order():
    assert tables.REFINEMENT_SPECS == [("w/o DR", {"refinement": "none"}), ("w/ AE", {"refinement": "ae"}),
                                       ("w/ SAE", {"refinement": "sae"})]
    assert [label for label, _ in tables.RETRIEVER_SPECS] == ["Random", "BM25", "Embedding", "Recency"]
    assert [label for label, _ in tables.EMBEDDING_SPECS] == [
        "w/o text: his_emb", "w/o text: diff_emb", "w/o text: his_emb + diff_emb",
        "w/ text: his_emb", "w/ text: diff_emb", "w/ text: his_emb + diff_emb"]
