"""`fit` with 2 DDP processes (gloo, CPU) against 1 process with the same effective batch.

Both runs go through the real command line (``python -m dep_lightning fit``, launched as
subprocesses: Lightning starts the second DDP process by re-running the command) with
the tiny backbone and embedder. Run A: 1 process, batch 2. Run B: 2 processes, batch 1
each, ``configs/trainer/ddp.yaml``, started either by Lightning or by ``torchrun`` (the
launcher of docs/performance.md's multi-node recipe; Lightning then takes the ranks
from the environment). Checked:

* every optimizer step of B trains on exactly the samples of the same step of A, and
  each epoch on every sample once;
* the trained adapter weights of B equal A's within ``TOLERANCE``;
* each process tests a disjoint share of the test set, together all of it, and the
  predictions file has every test sample exactly once.

The two runs compute the same loss only when per-sample averages and batch averages
agree: the language-model loss is a mean over target tokens (so every target is cut to
the same 32 tokens) and the SAE's sparsity term is a batch statistic (the mean
activation over the batch), so the runs use ``refinement: ae``. What is left is float
summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# max |B - A| over max |A - initial| (how far training moved the weights), all trainable
# tensors. Measured 4.8e-4 (8 Adam steps, lr 0.01); training on other samples per step
# moves weights by a whole update (ratio of order 1).
TOLERANCE = 1e-2
N_TRAIN, N_TEST = 8, 5


def run_fit(tmp_path: Path, name: str, extra: list[str], batch_size: int,
            launcher: str = "lightning") -> tuple[Path, subprocess.CompletedProcess]:
    runs = tmp_path / name
    override = tmp_path / f"{name}.yaml"
    override.write_text(f"""
model: {{init_args: {{backbone: tiny, refinement: ae, lr: 0.01, generation: {{max_new_tokens: 4}}}}}}
data:
  init_args:
    embedder: {{model: tiny}}
    prompt: {{with_text: false, guidance: false, max_target_tokens: 32}}
    cache_dir: {tmp_path / 'embeddings'}
    source: {{init_args: {{num_users: 40, num_items: 36}}}}
    limit_train: {N_TRAIN}
    limit_val: 2
    limit_test: {N_TEST}
    batch_size: {batch_size}
    eval_batch_size: 2
trainer:
  accelerator: cpu
  max_epochs: 2
  accumulate_grad_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {runs}, name: run}}}}
  callbacks:
    - class_path: dep_lightning.callbacks.GenerationEvaluator
      init_args: {{max_samples: 2}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, save_top_k: 0}}
    - class_path: dep_lightning.callbacks.TestMetricsWriter
    - class_path: tests.sample_log.SampleLog
      init_args: {{folder: {runs / 'samples'}}}
""")
    # lightning: one command, Lightning starts the other process; torchrun: torchrun starts
    # both and Lightning reads their ranks from the environment (the multi-node launch path).
    start = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
             if launcher == "torchrun" else [sys.executable])
    command = [*start, "-m", "dep_lightning", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
               *extra, "--config", str(override)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    return runs, done


def samples(runs: Path, stage: str, rank: int) -> tuple[int, list]:
    logged = json.loads((runs / "samples" / f"{stage}-rank{rank}.json").read_text())
    return logged["world_size"], logged["samples"]


def weights(runs: Path) -> dict[str, torch.Tensor]:
    path = runs / "run" / "version_0" / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def initial_weights(embedding_dim: int) -> dict[str, torch.Tensor]:
    from dep_lightning.models.dep_module import DEPModule

    model = DEPModule(backbone="tiny", embedding_dim=embedding_dim, refinement="ae")
    keep = model.trainable_state_keys()
    return {k: v for k, v in model.state_dict().items() if k in keep}


def failure(name: str, done: subprocess.CompletedProcess) -> str:
    return f"{name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    one, done_one = run_fit(tmp_path_factory.mktemp("one"), "one", [], batch_size=2)
    assert done_one.returncode == 0, failure("1 process", done_one)
    return one


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lightning", "torchrun"])
def test_two_ddp_processes_train_like_one_with_the_same_effective_batch(one_process, tmp_path, launcher):
    one = one_process
    two, done_two = run_fit(tmp_path, "two", ["--config", str(ROOT / "configs" / "trainer" / "ddp.yaml")],
                            batch_size=1, launcher=launcher)
    assert (two / "samples" / "train-rank1.json").is_file(), failure("2 processes", done_two)

    # Same samples in every optimizer step (2 epochs x 4 steps).
    world, steps_one = samples(one, "train", 0)
    assert world == 1 and len(steps_one) == N_TRAIN and all(len(ids) == 2 for _, _, ids in steps_one)
    ranks = [samples(two, "train", r) for r in (0, 1)]
    assert [w for w, _ in ranks] == [2, 2]
    assert [len(steps) for _, steps in ranks] == [N_TRAIN, N_TRAIN]  # as many steps on each process
    steps_two = [(a[0], a[1], sorted(a[2] + b[2])) for a, b in zip(ranks[0][1], ranks[1][1])]
    assert steps_two == [(e, i, sorted(ids)) for e, i, ids in steps_one]
    for epoch in (0, 1):
        assert len({i for e, _, ids in steps_two if e == epoch for i in ids}) == N_TRAIN

    # Trained weights.
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and a
    start = initial_weights(embedding_dim=a["refiner.encoder.weight"].shape[1])
    assert start.keys() == a.keys()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    differ = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 0.01, moved
    assert differ / moved < TOLERANCE, f"max |2 procs - 1 proc| = {differ:.3g}, training moved weights {moved:.3g}"

    # Test samples: disjoint shares, together all of them, each predicted once.
    assert done_two.returncode == 0, failure("2 processes (test after fit)", done_two)
    _, tested_one = samples(one, "test", 0)
    shares = [samples(two, "test", r)[1] for r in (0, 1)]
    assert len(tested_one) == N_TEST and all(shares)
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == sorted(tested_one)
    predictions = two / "run" / "version_0" / "predictions" / "test.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert sorted(r["sample_id"] for r in rows) == sorted(tested_one)
