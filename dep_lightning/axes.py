"""The ablation axes: the switches that define the paper's ablation tables, in one place.

Each axis names its key in ``manifest.json`` ``ablation``, which side sets it (the method:
``model``; the DataModule's prompt and retrieval: ``data``), the paper's own setting (the
tables' tie-break default), its values in table-row order with their row labels, and whether
every manifest carries it (``history`` came later, so older manifests lack it). The
manifest validator (``results/registry.py``), the tables' defaults and ablation rows
(``results/tables.py``) and the DataModule's ``describe()`` (checked by a test) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Axis:
    key: str
    side: Literal["model", "data"]
    #: The paper's setting; None where the paper has no single one (k varies by table).
    paper: Any = None
    #: ``(value, table-row label)`` in the order the ablation tables list them; empty = free values.
    rows: tuple[tuple[Any, str], ...] = ()
    #: Manifests always carry it (False: written only by newer versions).
    required: bool = True
    doc: str = field(default="", compare=False)
    #: Title of an ablation table of its own, one row per value (``dep-lightning tables`` writes
    #: ``axis_<key>.*``); empty for the paper's axes, whose tables (2, 3, 6-9) are built by name.
    table: str = ""

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(value for value, _ in self.rows)

    def specs(self) -> list[tuple[str, dict[str, Any]]]:
        """The ablation-table rows of this axis alone: ``(label, {key: value})``."""
        return [(label, {self.key: value}) for value, label in self.rows]


AXES: tuple[Axis, ...] = (
    Axis("refinement", "model", "sae", (("none", "w/o DR"), ("ae", "w/ AE"), ("sae", "w/ SAE")),
         doc="how the review embeddings are refined before the projectors (null for methods without)"),
    Axis("embeddings", "data", "his+diff",
         (("his", "his_emb"), ("diff", "diff_emb"), ("his+diff", "his_emb + diff_emb")),
         doc="which soft-prompt slots the prompt has ('none' without history slots, 'user' for PPlug)"),
    Axis("with_text", "data", True, ((False, "w/o text"), (True, "w/ text")),
         doc="the history reviews' text in the prompt"),
    Axis("guidance", "data", True, ((False, "w/o Guidance"), (True, "w/ Guidance")),
         doc="the note explaining the soft prompts"),
    Axis("k", "data", doc="history reviews per prompt"),
    Axis("retriever", "data", "recency",
         (("random", "Random"), ("bm25", "BM25"), ("embedding", "Embedding"), ("recency", "Recency")),
         doc="how the K history reviews are chosen"),
    Axis("history", "data", required=False, doc="the prompt shows the user's history at all (false: Non-Perso)"),
)
BY_KEY = {axis.key: axis for axis in AXES}
#: Keys every manifest's ``ablation`` has.
ABLATION_KEYS = tuple(axis.key for axis in AXES if axis.required)
#: Tie-breaks for the tables' defaults: the paper's own setting.
PAPER_DEFAULTS = {axis.key: axis.paper for axis in AXES if axis.paper is not None}
