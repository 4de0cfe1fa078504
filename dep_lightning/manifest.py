"""A run's identity (``manifest.json``, docs/runs.md): one typed record, written and read back
through this module only.

The test writer builds a :class:`RunManifest` from the method (``method_info()``,
``method_options()``) and the DataModule (``describe()``) and writes :meth:`RunManifest.to_dict`;
the results registry reads every run back through :meth:`RunManifest.parse`, which checks
each field and names the file, field and value of the first bad one. The ablation keys a
manifest must carry come from the axis registry (``dep_lightning/axes.py``), so a new axis
changes the writer and the reader together.

Older manifests stay readable: ``options`` and ``environment`` came later and may be
missing, and so may axes registered with ``required=False`` (``history``). Fields are read,
never rewritten, so a run's file is never changed by reading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dep_lightning.axes import ABLATION_KEYS
from dep_lightning.data.errors import InputError, json_object, required_field

SCHEMA = 1
#: Fields that identify one run rather than a configuration: runs that differ only in these
#: (and in ``seed``) are seeds of one configuration (``results/registry.py`` groups them).
RUN_IDENTITY = ("schema", "seed", "created", "code_version", "config_hash", "trainable_parameters", "environment")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunManifest:
    """What ran: the method, its ablation setting and options, the seed, the backbone and the
    data, plus what identifies this one run (code version, config hash, time, environment).

    Field order is the file's key order.
    """

    method: str
    #: One value per ablation axis (``dep_lightning/axes.py``), ``refinement`` null for methods without.
    ablation: dict[str, Any]
    #: Settings that change what the method computes beyond its ablation keys (``method_options()``).
    options: dict[str, Any] | None = field(default_factory=dict)
    seed: int | None = None
    backbone: str | None = None
    #: The DataModule's description of the data (source, split sizes, limits).
    data: dict[str, Any] = field(default_factory=dict)
    trainable_parameters: int | None = None
    code_version: str | None = None
    config_hash: str | None = None
    created: str | None = None
    #: dtype, device, CPU, attention kernel, ... (changes float rounding, not the configuration).
    environment: dict[str, Any] | None = None
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``manifest.json`` holds, ``schema`` first."""
        return {"schema": self.schema, "method": self.method, "ablation": dict(self.ablation),
                "options": self.options, "seed": self.seed, "backbone": self.backbone, "data": self.data,
                "trainable_parameters": self.trainable_parameters, "code_version": self.code_version,
                "config_hash": self.config_hash, "created": self.created, "environment": self.environment}

    @classmethod
    def parse(cls, doc: Any, where: str) -> RunManifest:
        """Check a manifest read from ``where`` field by field; the first bad field stops with an
        :class:`~dep_lightning.data.errors.InputError`."""
        doc = json_object(doc, where, "(top level)")
        schema = required_field(doc, "schema", where)
        if schema != SCHEMA:
            raise InputError(where, None, "schema", schema, "unsupported schema", f"this version reads schema {SCHEMA}")
        method = required_field(doc, "method", where)
        if not isinstance(method, str) or not method:
            raise InputError(where, None, "method", method, "wrong type", "expected a non-empty string")
        ablation = json_object(required_field(doc, "ablation", where), where, "ablation")
        for key in ABLATION_KEYS:
            value = required_field(ablation, key, where, "ablation.")
            if isinstance(value, (dict, list)):
                raise InputError(where, None, f"ablation.{key}", value, "wrong type", "expected a scalar")
        if not _is_int(ablation["k"]) or ablation["k"] < 0:
            raise InputError(where, None, "ablation.k", ablation["k"], "wrong type", "expected an integer >= 0")
        for key in ("with_text", "guidance"):
            if not isinstance(ablation[key], bool):
                raise InputError(where, None, f"ablation.{key}", ablation[key], "wrong type", "expected true or false")
        seed = doc.get("seed")
        if seed is not None and not _is_int(seed):
            raise InputError(where, None, "seed", seed, "wrong type", "expected an integer or null")
        backbone = doc.get("backbone")
        if backbone is not None and not isinstance(backbone, str):
            raise InputError(where, None, "backbone", backbone, "wrong type", "expected a string or null")
        for key in ("data", "options", "environment"):  # optional: older manifests lack the last two
            if key in doc and doc[key] is not None:
                json_object(doc[key], where, key)
        count = doc.get("trainable_parameters")
        if count is not None and not _is_int(count):
            raise InputError(where, None, "trainable_parameters", count, "wrong type", "expected an integer or null")
        return cls(method=method, ablation=ablation, options=doc.get("options"), seed=seed, backbone=backbone,
                   data=doc.get("data") or {}, trainable_parameters=count, code_version=doc.get("code_version"),
                   config_hash=doc.get("config_hash"), created=doc.get("created"),
                   environment=doc.get("environment"), schema=schema)
