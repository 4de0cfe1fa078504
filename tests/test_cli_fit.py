"""End to end through the CLI: fit -> best checkpoint by val/meteor -> test -> files; evaluate."""

import json
from pathlib import Path

import pytest

from dep_lightning.cli import main
from tests.helpers import tiny_override

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_fit_and_test_with_tiny_models(tmp_path, capsys):
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", save_dir=tmp_path / "runs")
    main(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(override)])
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert (run / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and "latest.ckpt" in checkpoints and len(checkpoints) == 3  # + the best
    rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["sample_id"] for r in rows}) == 4
    assert set(rows[0]) == {"sample_id", "user_id", "item_id", "category", "reference", "prediction", "history",
                            "generated_tokens", "hit_limit", "scores", "longest_copy", "copied", "echo"}
    for row in rows:
        assert 0 <= row["generated_tokens"] <= 8 and row["hit_limit"] == (row["generated_tokens"] == 8)
        assert len(row["history"]) == 2 and set(row["scores"]) == {"rouge1", "meteor"}
    for category in {r["category"] for r in rows}:
        assert (run / "predictions" / f"test-{category}.jsonl").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 4 and set(metrics["overall"]) >= {"rouge1", "meteor", "bleu"}
    assert metrics["backbone"] == "tiny" and len(metrics["config_hash"]) == 16
    rouge = sum(r["scores"]["rouge1"] for r in rows) / len(rows)
    assert abs(rouge - metrics["overall"]["rouge1"]) < 1e-9
    assert metrics["hygiene"]["n"] == 4
    assert metrics["hygiene"]["limit_rate"] == sum(r["hit_limit"] for r in rows) / 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "dep" and manifest["seed"] == 0 and manifest["backbone"] == "tiny"
    assert manifest["ablation"] == {"refinement": "sae", "embeddings": "his+diff", "with_text": True,
                                    "guidance": True, "history": True, "k": 2, "retriever": "recency"}
    assert manifest["data"]["n"]["test"] == 4 and manifest["trainable_parameters"] > 0
    assert manifest["options"] == {"input_norm": "standardize", "prompt_norm": "token", "prompt_scale": 1.0,
                                   "slot_offset": False}
    environment = manifest["environment"]
    assert environment["backbone_dtype"] == "float32" and environment["device"] == "cpu"  # the tiny backbone
    assert environment["cpu"] and isinstance(environment["cpu_native_bf16"], bool) and environment["torch"]
    assert environment["attn_implementation"] == "sdpa" and environment["gradient_checkpointing"] is False
    assert environment["generation_backend"] == "native"  # auto, on CPU
    import numpy as np

    latents = np.load(run / "analysis" / "latents.npz")
    assert latents["z"].shape == (4, 256) and sorted(latents["sample_id"]) == sorted(r["sample_id"] for r in rows)
    halves = metrics["uniqueness"]
    assert halves["unique"]["n"] + halves["non_unique"]["n"] == 4

    printed = capsys.readouterr().out
    assert "[train] epoch 0 batch 4/4 (100%)" in printed and "[test] batch 1/1 (100%)" in printed
    main(["evaluate", str(run / "predictions" / "test.jsonl"), "--out", str(tmp_path / "scores.json")])
    rescored = json.loads((tmp_path / "scores.json").read_text())
    assert rescored["overall"] == metrics["overall"]
    assert "| overall | 4 |" in capsys.readouterr().out


def test_evaluate_reports_a_bad_line(tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"prediction": "a", "reference": "b"}\n{"prediction": 3, "reference": "b"}\n')
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(path)])
    assert info.value.code == 2
    assert f"{path}:2: wrong type, field 'prediction', value 3" in capsys.readouterr().err
