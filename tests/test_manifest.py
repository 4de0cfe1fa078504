"""RunManifest: the one type a run's manifest.json is written from and read back through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dep_lightning.axes import ABLATION_KEYS, AXES
from dep_lightning.data.errors import InputError
from dep_lightning.manifest import RUN_IDENTITY, RunManifest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "docs" / "results").rglob("manifest.json"))


def manifest(**changes) -> dict:
    ablation = {"refinement": "sae", "embeddings": "his+diff", "with_text": False, "guidance": True, "k": 4,
                "retriever": "recency", "history": True}
    doc = RunManifest(method="dep", ablation=ablation, options={"input_norm": "standardize"}, seed=3,
                      backbone="tiny", data={"source": "embedded"}, trainable_parameters=10,
                      code_version="abc", config_hash="f00", created="2026-12-06T00:00:00+00:00",
                      environment={"dtype": "float32"}).to_dict()
    doc.update(changes)
    return doc


def test_written_then_read_gives_the_same_record_and_file():
    doc = manifest()
    assert list(doc) == ["schema", "method", "ablation", "options", "seed", "backbone", "data",
                         "trainable_parameters", "code_version", "config_hash", "created", "environment"]
    parsed = RunManifest.parse(json.loads(json.dumps(doc)), "manifest.json")
    assert parsed.to_dict() == doc and list(parsed.to_dict()) == list(doc)
    assert set(RUN_IDENTITY) <= set(doc)


def test_every_committed_manifest_reads_and_the_newest_round_trips_byte_for_byte():
    assert len(COMMITTED) > 10
    full = 0
    for path in COMMITTED:
        doc = json.loads(path.read_text())
        parsed = RunManifest.parse(doc, str(path))
        assert parsed.method == doc["method"] and parsed.ablation == doc["ablation"]
        if "environment" in doc and "options" in doc:  # written by the current writer
            full += 1
            assert list(parsed.to_dict()) == list(doc) and parsed.to_dict() == doc, path
    assert full >= 1


def test_older_manifests_without_options_environment_or_history_stay_readable():
    doc = manifest()
    for key in ("options", "environment"):
        del doc[key]
    del doc["ablation"]["history"]
    parsed = RunManifest.parse(doc, "old/manifest.json")
    assert parsed.options is None and parsed.environment is None
    optional = [axis.key for axis in AXES if not axis.required]
    assert optional == ["history"] and "history" not in ABLATION_KEYS


@pytest.mark.parametrize("changes, field, reason", [
    ({"schema": 2}, "schema", "unsupported schema"),
    ({"method": ""}, "method", "wrong type"),
    ({"ablation": []}, "ablation", "wrong type"),
    ({"seed": "3"}, "seed", "wrong type"),
    ({"seed": True}, "seed", "wrong type"),
    ({"backbone": 5}, "backbone", "wrong type"),
    ({"options": [1]}, "options", "wrong type"),
    ({"trainable_parameters": "many"}, "trainable_parameters", "wrong type"),
])
def test_a_bad_field_names_the_file_the_field_and_the_value(changes, field, reason):
    with pytest.raises(InputError) as error:
        RunManifest.parse(manifest(**changes), "runs/x/manifest.json")
    message = str(error.value)
    assert "runs/x/manifest.json" in message and field in message and reason in message
    assert "\n" not in message


@pytest.mark.parametrize("key", ABLATION_KEYS)
def test_every_required_axis_must_be_present(key):
    doc = manifest()
    del doc["ablation"][key]
    with pytest.raises(InputError, match=f"ablation.{key}"):
        RunManifest.parse(doc, "m.json")


def test_ablation_values_are_checked_by_type():
    for key, value in (("k", -1), ("k", 2.5), ("with_text", "yes"), ("guidance", 1), ("retriever", {"x": 1})):
        doc = manifest()
        doc["ablation"][key] = value
        with pytest.raises(InputError, match=f"ablation.{key}"):
            RunManifest.parse(doc, "m.json")
