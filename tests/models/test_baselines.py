"""Every baseline through `dep-lightning fit` on the embedded default (tiny models): files, method, caches."""

import json
from pathlib import Path

import pytest
import torch

from dep_lightning.cli import lightning_cli, main
from dep_lightning.data.datamodule import DEPDataModule
from dep_lightning.data.errors import ErrorLog
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.samples import build_samples
from dep_lightning.data.sources import EmbeddedSource
from tests.helpers import tiny_override

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
BASELINES = ROOT / "configs" / "baselines"


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """One embedding cache for every run of this module (each text is embedded once)."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory):
    """Registry files of every run this module makes, for the table 1 test at the end."""
    return tmp_path_factory.mktemp("table_runs")


def keep(run: Path, table_runs: Path, name: str) -> None:
    import shutil

    shutil.copytree(run, table_runs / name, ignore=shutil.ignore_patterns("checkpoints", "wandb"))


def override(tmp_path: Path, embeddings: Path) -> Path:
    return tiny_override(tmp_path / "tiny.yaml", embeddings, save_dir=tmp_path / "runs")


def stage_override(tmp_path: Path) -> Path:
    path = tmp_path / "stages.yaml"
    path.write_text(f"""
model:
  init_args:
    stage_cache_dir: {tmp_path / 'stages'}
    stage_generation: {{max_new_tokens: 6, do_sample: false}}
""")
    return path


def fit_args(name: str, tmp_path: Path, embeddings: Path, *extra: Path) -> list[str]:
    configs = [QUICKSTART, BASELINES / f"{name}.yaml", override(tmp_path, embeddings), *extra]
    return ["fit", *[a for c in configs for a in ("--config", str(c))]]


def run_dir(tmp_path: Path, version: int = 0) -> Path:
    return tmp_path / "runs" / "quickstart" / f"version_{version}"


def outputs(run: Path, method: str) -> list[dict]:
    """The run's prediction rows, after checking its metrics and manifest."""
    rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(isinstance(r["prediction"], str) for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 4 and set(metrics["overall"]) >= {"rouge1", "meteor", "bleu"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["backbone"] == "tiny"
    return rows


def kept_test_samples():
    """The 4 test samples the run keeps (``limit_test: 4``, round-robin across categories),
    straight from the data pipeline."""
    data = EmbeddedSource(num_users=40, num_items=36, seed=0).load(ErrorLog(), PreprocessReport())
    return DEPDataModule._limit(build_samples(data, "test", val_size=512, seed=0), 4)


@pytest.mark.slow
@pytest.mark.parametrize("name,method", [("non_perso", "non_perso"), ("rag", "rag"), ("pplug", "pplug")])
def test_prompting_and_pplug_baselines_run_end_to_end(name, method, tmp_path, embeddings, table_runs):
    main(fit_args(name, tmp_path, embeddings))
    rows = outputs(run_dir(tmp_path), method)
    keep(run_dir(tmp_path), table_runs, name)
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    if name == "non_perso":
        assert all(r["history"] == [] for r in rows) and manifest["trainable_parameters"] == 0
    if name == "rag":
        assert all(len(r["history"]) == 2 for r in rows) and manifest["trainable_parameters"] == 0
    if name == "pplug":
        assert manifest["ablation"]["embeddings"] == "user"
        # Projector (32 -> 64 -> 64) plus the instruction embedding (64): tiny embedder and backbone.
        assert manifest["trainable_parameters"] == (32 * 64 + 64) + (64 * 64 + 64) + 64
        state = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert sorted(state["state_dict"]) == ["instruction", "projector.net.0.bias", "projector.net.0.weight",
                                               "projector.net.2.bias", "projector.net.2.weight"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["recent", "concat"])
def test_copy_baselines_predict_the_copied_texts(mode, tmp_path, embeddings, table_runs):
    main(fit_args(f"copy_{mode}", tmp_path, embeddings))
    rows = outputs(run_dir(tmp_path), f"copy_{mode}")
    keep(run_dir(tmp_path), table_runs, f"copy_{mode}")
    samples = {s.sample_id: s for s in kept_test_samples()}
    assert sorted(samples) == sorted(r["sample_id"] for r in rows)
    for row in rows:
        history = samples[row["sample_id"]].history
        # Recency retrieval with k: 2 keeps the two newest reviews, shown oldest first.
        expected = history[-1].text if mode == "recent" else "\n\n".join(r.text for r in history[-2:])
        assert row["prediction"] == expected


@pytest.mark.slow
def test_no_user_control_adds_only_its_input_table_and_trains_only_adapters(tmp_path, embeddings, table_runs):
    from dep_lightning.models import DEPModule, NoUserControl

    cli = lightning_cli(fit_args("no_user", tmp_path, embeddings))
    outputs(run_dir(tmp_path), "no_user")
    keep(run_dir(tmp_path), table_runs, "no_user")
    dim = cli.datamodule.embedding_dim
    dep = DEPModule(backbone="tiny", embedding_dim=dim, latent_dim=256)
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    assert manifest["trainable_parameters"] == dep.trainable_parameter_count() + 2 * 8 * dim
    assert cli.model.trainable_parameter_count() == manifest["trainable_parameters"]

    untrained = NoUserControl(backbone="tiny", embedding_dim=dim, latent_dim=256, max_slots=8)
    trained = dict(cli.model.named_parameters())
    assert set(trained) == {n for n, _ in untrained.named_parameters()}
    for name, before in untrained.named_parameters():
        adapter = name.split(".")[0] in {"refiner", "proj_his", "proj_diff", "slot_table"}
        assert trained[name].requires_grad == adapter, name
        assert torch.equal(trained[name].cpu(), before) != adapter, f"{name}: changed={adapter} expected"


def stage_counts(run: Path) -> dict:
    return json.loads((run / "analysis" / "stages.json").read_text())["stages"]


def cache_files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("name,stages", [("pag", ("profile",)), ("dpl", ("analysis", "summary"))])
def test_multi_stage_baselines_cache_every_stage_text(name, stages, tmp_path, embeddings, capsys, table_runs):
    args = fit_args(name, tmp_path, embeddings, stage_override(tmp_path))
    main(args)
    first = outputs(run_dir(tmp_path, 0), name)
    keep(run_dir(tmp_path, 0), table_runs, name)
    counts = stage_counts(run_dir(tmp_path, 0))
    assert set(counts) == set(stages)
    assert all(counts[s]["generated"] > 0 for s in stages)
    if name == "pag":
        assert counts["profile"] == {"cached": 0, "generated": 4}  # one profile per sample
    files = cache_files(tmp_path / "stages")
    assert len(files) == sum(c["generated"] for c in counts.values())
    # File names come from the hash alone: no user or item id anywhere in the cache paths.
    assert all(len(Path(f).stem) == 64 and Path(f).parent.name == Path(f).stem[:2] for f in files)
    ids = {r["user_id"] for r in first} | {r["item_id"] for r in first}
    assert not any(i in f for f in files for i in ids)
    assert all(isinstance(r["profile"], str) for r in first)

    capsys.readouterr()
    main(args)
    second = outputs(run_dir(tmp_path, 1), name)
    again = stage_counts(run_dir(tmp_path, 1))
    assert all(again[s] == {"cached": counts[s]["cached"] + counts[s]["generated"], "generated": 0} for s in stages)
    assert "0 generated" in capsys.readouterr().out
    assert cache_files(tmp_path / "stages") == files  # nothing written, nothing rewritten
    assert [(r["sample_id"], r["profile"], r["prediction"]) for r in second] == \
        [(r["sample_id"], r["profile"], r["prediction"]) for r in first]


ALL_METHODS = ("non_perso", "rag", "pag", "dpl", "pplug", "copy_recent", "copy_concat", "no_user")


@pytest.mark.slow
def test_table1_lists_every_baseline_next_to_dep(tmp_path, embeddings, table_runs):
    """Runs DEP itself, then regenerates table 1 from the real run directories of this module."""
    from dep_lightning.results.command import make_tables

    ran = sorted(p.name for p in table_runs.iterdir())
    if ran != sorted(ALL_METHODS):
        pytest.skip(f"needs every baseline test of this module to run first (ran: {ran})")
    main(["fit", "--config", str(QUICKSTART), "--config", str(override(tmp_path, embeddings))])
    keep(run_dir(tmp_path), table_runs, "dep")
    out = tmp_path / "tables"
    tables = make_tables([str(table_runs)], out=out, resamples=20, figures=False, echo=lambda line: None)
    table1 = next(t for t in tables if t.name == "table1")
    labels = {row.label: row for row in table1.rows}
    filled = [label for label, row in labels.items() if row.group is not None]
    assert len(filled) == 1 + len(ALL_METHODS), filled
    for row in table1.rows:
        if row.group is not None:
            assert row.missing is None and any(cell.mean is not None for cell in row.cells), row.label
    markdown = (out / "table1.md").read_text()
    for label in filled:
        assert label in markdown
