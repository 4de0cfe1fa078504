"""Kill -9 during ``dep-lightning fit``, resume with ``--ckpt_path last``: same result as never stopping.

Two runs of the same tiny config and seed: A trains uninterrupted; B is killed with
SIGKILL in the middle of its second epoch (once the checkpoint of step 8 of 12 exists)
and resumed with ``--ckpt_path last``. The resumed run must end with bit-identical
trainable weights, predictions and test metrics. The comparison can fail: the final
weights differ from the initial ones and from those at the kill, and a control run
resumed from the same checkpoint without the saved data-loader position (what Lightning
does with a plain DataLoader: restart the epoch) ends with different weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from dep_lightning.data.batching import LengthBucketSampler
from dep_lightning.data.resumable import ResumableDataLoader
from tests.helpers import finish_cli, launch_cli

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH, EPOCHS, KILL_AFTER_STEP = 6, 2, 8


def test_loader_resumes_after_the_batches_it_handed_out():
    def loader(epoch=0):
        sampler = LengthBucketSampler(list(range(40)), batch_size=4, seed=3, pool=2)
        sampler.set_epoch(epoch)
        return ResumableDataLoader(list(range(40)), batch_sampler=sampler)

    whole = [b.tolist() for b in loader()]
    first = loader()
    it = iter(first)
    seen = [next(it).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"order": {"seed": 3, "epoch": 0, "batches": 10}, "batches": 3}

    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + [b.tolist() for b in resumed] == whole
    assert [b.tolist() for b in resumed] == whole  # only the first iteration after loading skips

    other_epoch = loader(epoch=1)  # a checkpoint of epoch 0 does not shorten epoch 1
    other_epoch.load_state_dict(state)
    assert len(list(other_epoch)) == 10
    finished = loader()
    finished.load_state_dict({**state, "batches": 10})  # saved at the end of the epoch: nothing to skip
    assert len(list(finished)) == 10


def write_config(root: Path, cache: Path) -> Path:
    config = root / "config.yaml"
    config.write_text(f"""
seed_everything: 0
test_after_fit: true
model:
  class_path: dep_lightning.models.dep_module.DEPModule
  init_args:
    backbone: tiny
    latent_dim: 16
    lr: 0.01
    generation: {{max_new_tokens: 6, do_sample: true}}
data:
  class_path: dep_lightning.data.datamodule.DEPDataModule
  init_args:
    source: {{class_path: dep_lightning.data.sources.EmbeddedSource, init_args: {{num_users: 40, num_items: 36}}}}
    embedder: {{model: tiny}}
    cache_dir: {cache}
    k: 2
    limit_train: {2 * STEPS_PER_EPOCH}
    limit_val: 2
    limit_test: 4
    batch_size: 2
    eval_batch_size: 4
trainer:
  accelerator: cpu
  devices: 1
  precision: 32-true
  max_epochs: {EPOCHS}
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root / 'runs'}, name: run}}}}
  callbacks:
    - class_path: tests.reliability.pacing.PauseAfterStep
      init_args: {{seconds: 0.3}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root / 'checkpoints'}, every_n_train_steps: 1, save_top_k: -1, save_last: true}}
    - class_path: dep_lightning.callbacks.TestMetricsWriter
""")
    return config


def launch(config: Path, *extra: str):
    return launch_cli(["fit", "--config", str(config), *extra], config.parent)


def finish(proc) -> str:
    return finish_cli(proc, timeout=400)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def newest_last(root: Path) -> Path:
    return max((root / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)


def same(a: dict, b: dict) -> bool:
    # Exact on purpose: resuming restores the weights, optimizer and loader position bit for
    # bit, and every later step runs the same ops on the same shapes on the same CPU.
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def results(root: Path) -> tuple[dict, list]:
    run = max((root / "runs" / "run").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    return {k: metrics[k] for k in ("overall", "categories")}, [(r["sample_id"], r["prediction"]) for r in rows]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    cache = tmp_path / "embeddings"
    whole_root, killed_root, control_root = (tmp_path / name for name in ("whole", "killed", "control"))
    for root in (whole_root, killed_root, control_root):
        root.mkdir()
    killed_cfg = write_config(killed_root, cache)
    whole = launch(write_config(whole_root, cache))
    killed = launch(killed_cfg)
    marker = killed_root / "checkpoints" / f"epoch=1-step={KILL_AFTER_STEP}.ckpt"
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert killed.poll() is None, killed.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    at_kill = weights(killed_root / "checkpoints" / "last.ckpt")
    state = torch.load(killed_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Killed mid-run in epoch 1 (last.ckpt is written just after the step checkpoint: it may be one behind).
    assert KILL_AFTER_STEP - 1 <= state["global_step"] < STEPS_PER_EPOCH * EPOCHS
    assert state["epoch"] == 1
    position = state["DEPDataModule"]["train_loader"]  # the DataModule's copy of the loader position
    assert position["batches"] == state["global_step"] - STEPS_PER_EPOCH  # batches of epoch 1 trained on
    assert position["order"]["seed"] == 0 and position["order"]["batches"] == STEPS_PER_EPOCH
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [position]  # Lightning's copy

    # Control: the same checkpoint without the loader's position (a plain DataLoader's resume).
    shutil.copytree(killed_root / "checkpoints", control_root / "checkpoints")
    del state["loops"]["fit_loop"]["state_dict"]["combined_loader"], state["DEPDataModule"]
    torch.save(state, control_root / "checkpoints" / "last.ckpt")

    resumed = launch(killed_cfg, "--ckpt_path", "last")
    control = launch(write_config(control_root, cache), "--ckpt_path", "last")
    resumed_log, control_log = finish(resumed), finish(control)
    finish(whole)
    assert f"[fit] resuming from {killed_root / 'checkpoints' / 'last.ckpt'}" in resumed_log
    assert "not resumable" not in resumed_log
    assert f"[fit] resuming from {control_root / 'checkpoints' / 'last.ckpt'}" in control_log

    final_whole = weights(newest_last(whole_root))
    final_resumed = weights(newest_last(killed_root))
    assert newest_last(killed_root).name == "last.ckpt"  # the resumed run continued the same files
    assert same(final_resumed, final_whole)
    assert results(killed_root) == results(whole_root)

    # The comparison can fail: training moved the weights, and so did the steps after the kill.
    from dep_lightning.models.dep_module import DEPModule

    initial = {k: v for k, v in DEPModule(backbone="tiny", latent_dim=16, embedding_dim=32).state_dict().items()
               if k in final_whole}
    assert initial.keys() == final_whole.keys() and not same(initial, final_whole)
    assert not same(at_kill, final_whole)
    assert not same(weights(newest_last(control_root)), final_whole)


def test_ckpt_path_last_finds_the_previous_version_of_the_run(tmp_path):
    """The shipped configs start a new logger version per run; `last` must look in the earlier ones."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from dep_lightning.training import last_checkpoint

    trainer = L.Trainer(logger=CSVLogger(tmp_path / "runs", name="quickstart"), callbacks=[ModelCheckpoint()],
                        enable_progress_bar=False, enable_model_summary=False)
    assert last_checkpoint(trainer) is None  # nothing yet: Lightning then starts from scratch
    for version, age in (("version_0", 100), ("version_1", 10), ("version_2", 50)):
        path = tmp_path / "runs" / "quickstart" / version / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
    assert last_checkpoint(trainer) == tmp_path / "runs" / "quickstart" / "version_1" / "checkpoints" / "last.ckpt"
