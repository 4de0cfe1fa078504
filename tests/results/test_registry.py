"""Reading run directories: validation with clear errors, discovery, grouping by seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dep_lightning.cli import main
from dep_lightning.data.errors import InputError
from dep_lightning.results.registry import find_run_dirs, load_registry, load_run
from tests.results.runs import manifest, write_run

SCORES = {"Books": {"rouge1": 0.3, "meteor": 0.2, "bleu": 5.0}}


def edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda m: m["ablation"].pop("k"), "ablation.k", "missing field"),
        (lambda m: m["ablation"].update(k="four"), "ablation.k", "value 'four' (expected an integer >= 0)"),
        (lambda m: m["ablation"].update(with_text="yes"), "ablation.with_text", "expected true or false"),
        (lambda m: m.update(seed="zero"), "seed", "expected an integer or null"),
        (lambda m: m.update(method=7), "method", "expected a non-empty string"),
        (lambda m: m.update(schema=2), "schema", "unsupported schema"),
        (lambda m: m.update(ablation=[1]), "ablation", "expected an object, got list"),
        (lambda m: m.update(options="fast"), "options", "expected an object, got str"),
        (lambda m: m.update(environment=[1]), "environment", "expected an object, got list"),
    ],
)
def test_bad_manifest_names_file_field_and_value(tmp_path, change, field, message):
    run = write_run(tmp_path / "run", SCORES, predictions=None)
    edit_json(run / "manifest.json", change)
    with pytest.raises(InputError) as error:
        load_run(run)
    text = str(error.value)
    assert text.startswith(f"{run / 'manifest.json'}: ")
    assert f"field {field!r}" in text and message in text


def test_malformed_json_names_the_line(tmp_path):
    run = write_run(tmp_path / "run", SCORES, predictions=None)
    (run / "metrics.json").write_text('{\n  "categories": {},\n  "overall": {"n": 3,}\n}')
    with pytest.raises(InputError, match=r"metrics.json:3: malformed JSON"):
        load_run(run)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["categories"]["Books"].update(meteor="high"), "categories.Books.meteor"),
        (lambda m: m["overall"].pop("n"), "overall.n"),
        (lambda m: m.update(uniqueness={"unique": {"n": 1}}), "uniqueness.non_unique"),
        (lambda m: m["hygiene"].update(copy_rate=None), "hygiene.copy_rate"),
    ],
)
def test_bad_metrics_names_the_field(tmp_path, change, field):
    run = write_run(tmp_path / "run", SCORES, predictions=None)
    edit_json(run / "metrics.json", change)
    with pytest.raises(InputError, match=f"metrics.json: .*field {field!r}"):
        load_run(run)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda row: row["scores"].pop("meteor"), "test.jsonl:2: missing field, field 'scores.meteor'"),
        (lambda row: row.update(prediction=None), "test.jsonl:2: wrong type, field 'prediction'"),
        (lambda row: row.update(sample_id="Books/test/0"), "test.jsonl:2: duplicate sample, field 'sample_id'"),
        (lambda row: row.pop("scores"), "test.jsonl:2: missing field, field 'scores'"),
    ],
)
def test_bad_prediction_row_names_line_and_field(tmp_path, edit, expected):
    run = write_run(tmp_path / "run", SCORES)
    path = run / "predictions" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows[1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=expected):
        load_run(run)


def test_cli_reports_a_bad_manifest_in_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "runs" / "r", SCORES, predictions=None)
    edit_json(run / "manifest.json", lambda m: m["ablation"].update(guidance="on"))
    with pytest.raises(SystemExit) as exit_info:
        main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"dep-lightning: error: {run / 'manifest.json'}: wrong type, field 'ablation.guidance', "
                   "value 'on' (expected true or false)")


def test_discovery_is_recursive_and_skips_incomplete_runs(tmp_path):
    write_run(tmp_path / "a" / "version_0", SCORES, predictions=None)
    write_run(tmp_path / "b" / "deep" / "version_3", SCORES, predictions=None)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text("{}")
    folders, notes = find_run_dirs([tmp_path])
    assert folders == [tmp_path / "a" / "version_0", tmp_path / "b" / "deep" / "version_3"]
    assert notes == [f"{tmp_path / 'c'}: not a complete run (no manifest.json); skipped"]
    # A run directory given directly is found too.
    assert find_run_dirs([tmp_path / "a" / "version_0"])[0] == [tmp_path / "a" / "version_0"]


def test_runs_differing_only_in_seed_form_one_group(tmp_path):
    write_run(tmp_path / "s0", SCORES, seed=0)
    write_run(tmp_path / "s1", {"Books": {"rouge1": 0.5, "meteor": 0.4, "bleu": 7.0}}, seed=1)
    write_run(tmp_path / "k8", SCORES, seed=0, k=8)
    edit_json(tmp_path / "s1" / "manifest.json", lambda m: m.update(created="2027-01-01", code_version="0.2.0",
                                                                     config_hash="other", trainable_parameters=5,
                                                                     environment={"cpu": "another CPU"}))
    registry = load_registry([tmp_path])
    sizes = sorted((len(g.runs), g.ablation["k"]) for g in registry.groups)
    assert sizes == [(1, 8), (2, 4)]
    # A method option (not an ablation key) makes another configuration, not another seed.
    write_run(tmp_path / "offset", SCORES, seed=2)
    edit_json(tmp_path / "offset" / "manifest.json", lambda m: m.update(options={"slot_offset": True}))
    assert sorted(len(g.runs) for g in load_registry([tmp_path]).groups) == [1, 1, 2]
    (tmp_path / "offset" / "manifest.json").unlink()
    (tmp_path / "offset" / "metrics.json").unlink()
    group = next(g for g in registry.groups if len(g.runs) == 2)
    assert group.seeds == [0, 1]
    mean, std, seeds = group.summary("Books", "meteor")
    assert (mean, seeds) == (pytest.approx(0.3), 2) and std == pytest.approx(np.std([0.2, 0.4], ddof=1))
    # Per-sample values: averaged over seeds per sample id.
    ids, samples = group.per_sample("Books", "meteor")
    assert ids == sorted(f"Books/test/{i}" for i in range(8))
    assert np.allclose(samples.values, 0.3)
    # BLEU statistics: summed over seeds (outputs equal references -> BLEU 100 either way).
    _, bleu = group.per_sample("Books", "bleu")
    assert bleu.values.shape == (8, 10) and bleu.point() == pytest.approx(100.0)
    assert isinstance(group.summary("Books", "bertscore"), str)
    assert group.summary("Movies_and_TV", "meteor").startswith("no category Movies_and_TV in metrics.json")


def test_seeds_are_paired_on_shared_sample_ids(tmp_path):
    write_run(tmp_path / "s0", SCORES, seed=0, per_category=8)
    write_run(tmp_path / "s1", SCORES, seed=1, per_category=5)  # a shorter test set
    group = load_registry([tmp_path]).groups[0]
    ids, samples = group.per_sample("Books", "rouge1")
    assert ids == sorted(f"Books/test/{i}" for i in range(5)) and samples.n == 5


def test_seed_duplicates_are_noted(tmp_path):
    write_run(tmp_path / "a", SCORES, seed=0, predictions=None)
    write_run(tmp_path / "b", SCORES, seed=0, predictions=None)
    registry = load_registry([tmp_path])
    assert len(registry.groups) == 1
    assert any("same seed counted separately" in note for note in registry.all_notes())
    assert sum("no predictions/test.jsonl" in note for note in registry.all_notes()) == 2


def test_manifest_helper_matches_the_documented_example():
    documented = {"schema": 1, "method": "dep",
                  "ablation": {"refinement": "sae", "embeddings": "his+diff", "with_text": True, "guidance": True,
                               "k": 4, "retriever": "recency"}}
    written = manifest()
    assert {k: written[k] for k in documented} == documented


def test_undecodable_predictions_and_file_arguments(tmp_path):
    run = write_run(tmp_path / "run", SCORES)
    path = run / "predictions" / "test.jsonl"
    path.write_bytes(path.read_bytes() + b'{"sample_id": "\xff"}\n')
    with pytest.raises(InputError, match=r"test.jsonl: undecodable bytes, value b'\\xff'"):
        load_run(run)
    # A manifest.json given directly stands for its run folder; other files are refused.
    assert find_run_dirs([run / "manifest.json"])[0] == [run]
    with pytest.raises(InputError, match="not a run folder"):
        find_run_dirs([path])


def test_registry_copies_inside_a_run_are_not_a_second_run(tmp_path):
    """A W&B logger keeps copies of manifest.json / metrics.json inside the run directory."""
    import shutil

    run = write_run(tmp_path / "runs" / "dep", {"Books": {"rouge1": 0.2, "meteor": 0.1, "bleu": 1.0}})
    copy = run / "wandb" / "offline-run-1" / "files"
    copy.mkdir(parents=True)
    for name in ("manifest.json", "metrics.json"):
        shutil.copy(run / name, copy / name)
    found, _ = find_run_dirs([tmp_path / "runs"])
    assert found == [run]


def test_generations_under_another_condition_are_another_configuration(tmp_path):
    """A run whose test prompts showed a donor's history (``data.init_args.condition: swap``)
    records the condition, so it never averages with the ordinary run as a seed."""
    from dep_lightning.data.datamodule import DEPDataModule
    from tests.helpers import small_datamodule

    assert "condition" not in small_datamodule(tmp_path).describe()["data"]
    swapped = small_datamodule(tmp_path, condition="swap").describe()["data"]
    assert swapped["condition"] == "swap"
    assert set(swapped) - {"condition"} == set(DEPDataModule.describe(small_datamodule(tmp_path))["data"])
    write_run(tmp_path / "runs" / "true", SCORES, seed=0)
    write_run(tmp_path / "runs" / "swap", SCORES, seed=1)
    edit_json(tmp_path / "runs" / "swap" / "manifest.json", lambda m: m["data"].update(condition="swap"))
    groups = load_registry([tmp_path / "runs"]).groups
    assert sorted(len(g.runs) for g in groups) == [1, 1]
