"""Checkpoints in DeepSpeed's folder layout, without DeepSpeed (which needs CUDA): the folder
is built as Lightning's DeepSpeed strategy writes it (``checkpoints.py`` describes the layout)
from a real fit's checkpoint; ``test`` on it must predict exactly what ``test`` on the file
predicts, and ``fit --ckpt_path last`` must find it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dep_lightning.checkpoints import is_deepspeed_folder, read_deepspeed_folder
from dep_lightning.cli import main
from dep_lightning.training import last_checkpoint, refuse_zero_stage_3
from tests.helpers import tiny_override

ROOT = Path(__file__).resolve().parents[1]


def deepspeed_folder(checkpoint: dict, folder: Path, stage: int = 1, prefix: str = "", dtype=None) -> Path:
    """``folder`` as Lightning's DeepSpeed strategy saves ``checkpoint`` (its client state beside
    DeepSpeed's own keys; the module's weights under ``module``; optimizer shards apart)."""
    module = {prefix + k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
              for k, v in checkpoint["state_dict"].items()}
    client = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
    states = {"module": module, "buffer_names": [], "optimizer": None, "param_shapes": [{k: v.shape for k, v in
              module.items()}], "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None,
              "lr_scheduler": None, "data_sampler": None, "random_ltd": None, "sparse_tensor_module_names": set(),
              "skipped_steps": 0, "global_steps": client["global_step"], "global_samples": 4 * client["global_step"],
              "dp_world_size": 1, "mp_world_size": 1, "ds_config": {"zero_optimization": {"stage": stage}},
              "ds_version": "0.16.4", **client}
    (folder / "checkpoint").mkdir(parents=True)
    torch.save(states, folder / "checkpoint" / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": stage}}, folder / "checkpoint" /
               "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text("checkpoint")
    return folder


def saved_checkpoint():
    weights = {"refiner.enc.weight": torch.randn(4, 3), "proj_his.net.0.bias": torch.randn(4)}
    return {"state_dict": weights, "optimizer_states": [{"state": {}}], "epoch": 1, "global_step": 6,
            "pytorch-lightning_version": "2.6.0", "loops": {"fit_loop": {}}, "callbacks": {},
            "hyper_parameters": {"latent_dim": 4}}


def test_the_folder_reads_as_a_lightning_checkpoint(tmp_path):
    saved = saved_checkpoint()
    folder = deepspeed_folder(saved, tmp_path / "last.ckpt", prefix="_forward_module.", dtype=torch.bfloat16)
    assert is_deepspeed_folder(folder) and not is_deepspeed_folder(tmp_path) and not is_deepspeed_folder(
        folder / "latest")
    loaded = read_deepspeed_folder(folder)
    assert set(loaded) == {"state_dict", "epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks",
                           "hyper_parameters"}
    assert set(loaded["state_dict"]) == set(saved["state_dict"])  # the old wrapper prefix is gone
    for key, value in saved["state_dict"].items():  # DeepSpeed's bf16 module copy, exactly
        assert torch.equal(loaded["state_dict"][key], value.to(torch.bfloat16))
    assert loaded["global_step"] == 6 and loaded["hyper_parameters"] == {"latent_dim": 4}


def test_a_stage_3_folder_is_refused_with_the_conversion(tmp_path):
    folder = deepspeed_folder(saved_checkpoint(), tmp_path / "epoch=0.ckpt", stage=3)
    with pytest.raises(ValueError, match="ZeRO stage 3.*convert_zero_checkpoint_to_fp32_state_dict"):
        read_deepspeed_folder(folder)


@pytest.mark.parametrize("strategy, refused", [
    ("deepspeed_stage_3", True), ("deepspeed_stage_3_offload", True), ("deepspeed_stage_2", False), ("ddp", False),
    ({"class_path": "lightning.pytorch.strategies.DeepSpeedStrategy", "init_args": {"stage": 3}}, True),
    ({"class_path": "lightning.pytorch.strategies.DeepSpeedStrategy", "init_args": {"stage": 2}}, False),
    ({"class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {}}, False), (None, False),
])
def test_zero_stage_3_is_refused_before_anything_is_built(strategy, refused):
    if refused:
        with pytest.raises(ValueError, match="ZeRO stage 3 is not supported"):
            refuse_zero_stage_3(strategy)
    else:
        refuse_zero_stage_3(strategy)


def test_a_config_with_stage_3_stops_the_cli(tmp_path, capsys):
    override = tmp_path / "zero3.yaml"
    override.write_text("trainer:\n  strategy:\n    class_path: lightning.pytorch.strategies.DeepSpeedStrategy\n"
                        "    init_args: {stage: 3}\n")
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(override)])
    assert stopped.value.code == 2
    assert "ZeRO stage 3 is not supported" in capsys.readouterr().err


def test_last_finds_a_deepspeed_folder(tmp_path):
    checkpoints = tmp_path / "quickstart" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").mkdir()  # an empty folder is not a checkpoint
    trainer = SimpleNamespace(callbacks=[], logger=SimpleNamespace(root_dir=str(tmp_path / "quickstart")))
    assert last_checkpoint(trainer) is None
    (checkpoints / "last.ckpt").rmdir()
    folder = deepspeed_folder(saved_checkpoint(), checkpoints / "last.ckpt")
    assert last_checkpoint(trainer) == folder


@pytest.mark.slow
def test_test_on_a_deepspeed_folder_predicts_what_the_file_predicts(tmp_path):
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", save_dir=tmp_path / "runs")
    configs = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(override)]
    main(["fit", *configs, "--run_dir", str(tmp_path / "fit")])
    best = next(p for p in (tmp_path / "fit" / "checkpoints").iterdir() if p.name not in ("last.ckpt", "latest.ckpt"))
    folder = deepspeed_folder(torch.load(best, weights_only=True), tmp_path / "deepspeed" / "best.ckpt")

    main(["test", *configs, "--ckpt_path", str(best), "--run_dir", str(tmp_path / "from_file")])
    main(["test", *configs, "--ckpt_path", str(folder), "--run_dir", str(tmp_path / "from_folder")])
    rows = {name: [json.loads(line) for line in (tmp_path / name / "predictions" / "test.jsonl").open()]
            for name in ("fit", "from_file", "from_folder")}
    assert len(rows["from_folder"]) == 4
    assert [r["prediction"] for r in rows["from_folder"]] == [r["prediction"] for r in rows["from_file"]] == \
        [r["prediction"] for r in rows["fit"]]
