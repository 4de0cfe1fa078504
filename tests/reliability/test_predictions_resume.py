"""Test predictions written batch by batch, resumed after a kill, and processes without a batch.

* ``test`` killed with SIGKILL mid-epoch and run again with the same command (same run
  directory) completes the predictions file with each sample once, rows identical to an
  uninterrupted ``test``; the rerun generates only the batches that were not written.
* ``test`` on 2 processes (gloo, CPU) with fewer test batches than processes passes, the
  process without a batch runs a copy of the first, and each sample is predicted once.
* The parts: torn part files, whole-batch skipping, padding.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from dep_lightning.data.errors import InputError
from dep_lightning.data.types import Example
from dep_lightning.journal import append_jsonl, drop_torn_tail, read_jsonl_prefix
from tests.helpers import finish_cli, launch_cli, tiny_override

ROOT = Path(__file__).resolve().parents[2]
N_TEST = 10  # test samples of the kill test, one per batch


class PauseAfterTestBatch(L.Callback):
    """Slows test batches down so a test can kill the run between two of them; changes no state."""

    def __init__(self, seconds: float = 0.3):
        self.seconds = seconds

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        time.sleep(self.seconds)


class BatchLog(L.Callback):
    """Appends the sample ids of every test batch this process starts to ``<path>.rank<R>``."""

    def __init__(self, path: str):
        self.path = path

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as handle:
            handle.write(json.dumps(list(batch.sample_id)) + "\n")


def batches_run(path: Path, rank: int = 0) -> list[list[str]]:
    log = Path(f"{path}.rank{rank}")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


# -- parts ------------------------------------------------------------------------------------
def test_a_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    part = tmp_path / "test.rank0.jsonl.part"
    append_jsonl(part, [{"sample_id": "a/test/0"}, {"sample_id": "a/test/1"}])
    with open(part, "a") as handle:
        handle.write('{"sample_id": "a/te')  # killed mid-write
    assert [r["sample_id"] for r in read_jsonl_prefix(part)] == ["a/test/0", "a/test/1"]
    drop_torn_tail(part)
    append_jsonl(part, [{"sample_id": "a/test/2"}])
    assert [r["sample_id"] for r in read_jsonl_prefix(part)] == ["a/test/0", "a/test/1", "a/test/2"]


def test_a_bad_line_before_the_end_is_an_error(tmp_path):
    part = tmp_path / "test.rank0.jsonl.part"
    part.write_text('{"sample_id": "a/test/0"}\nnot json\n{"sample_id": "a/test/1"}\n')
    with pytest.raises(InputError, match=r"test.rank0.jsonl.part:2: malformed JSON, value 'not json'"):
        read_jsonl_prefix(part)


def datamodule(batch_size: int):
    from dep_lightning.data.datamodule import DEPDataModule

    return DEPDataModule(eval_batch_size=batch_size)


def examples(n: int) -> list[Example]:
    """``n`` test examples; resuming reads only their sample ids."""
    return [Example(sample_id=f"a/test/{i}", category="a", user_id=f"u{i}", item_id=f"i{i}", reference="",
                    input_ids=[1, 2], labels=[-100, 2], prompt_length=1, slot_pos=[], slot_kind=[],
                    slot_vec=np.zeros((0, 1), np.float32), slot_peers=np.zeros(0, bool), history=[], retrieved=[],
                    latest="") for i in range(n)]


def cut(kept: list[Example], batch_size: int) -> list[list[str]]:
    ids = [e.sample_id for e in kept]
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def test_resuming_drops_whole_batches_and_keeps_the_others_as_they_were():
    dm, order = datamodule(3), [6, 0, 5, 1, 4, 2, 3]  # batches [6 0 5] [1 4 2] [3]
    # 6 and 0 done but not 5: that batch is generated again whole (same first sample, same seed).
    dm.test_resume = lambda: {"a/test/6", "a/test/0", "a/test/1", "a/test/4", "a/test/2"}
    kept, kept_order = dm._unfinished(examples(7), order)
    assert kept_order is None and cut(kept, 3) == [["a/test/6", "a/test/0", "a/test/5"], ["a/test/3"]]
    assert dm.test_resume is None  # used once


def test_everything_done_keeps_the_last_batch_so_the_epoch_end_runs():
    dm = datamodule(2)
    dm.test_resume = lambda: {f"a/test/{i}" for i in range(5)}
    kept, _ = dm._unfinished(examples(5), None)
    assert cut(kept, 2) == [["a/test/4"]]
    dm.test_resume = lambda: set()
    every = examples(5)
    kept, order = dm._unfinished(every, [4, 3, 2, 1, 0])
    assert kept is every and order == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("n,batch_size,world,padded", [(2, 2, 2, True), (3, 2, 4, True), (4, 2, 2, False),
                                                       (5, 2, 2, False), (0, 2, 2, False), (2, 2, 1, False)])
def test_only_fewer_batches_than_processes_are_padded(n, batch_size, world, padded):
    from dep_lightning.data.batching import EvalShardSampler

    dm = datamodule(batch_size)
    assert dm._needs_padding(n, world) is padded
    shards = [list(EvalShardSampler(n, batch_size, world, r, pad=padded)) for r in range(world)]
    assert sorted({i for s in shards for i in s}) == list(range(n))
    if n:
        assert all(shards)  # no process without a batch
    if not padded:
        assert sum(len(s) for s in shards) == n


# -- kill -9 during test, rerun ------------------------------------------------------------------
def write_test_config(tmp_path: Path, run_dir: Path, pause: float = 0.0, n_test: int = N_TEST,
                      batch_size: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    cache = tmp_path / "embeddings"
    override = tiny_override(tmp_path / f"{run_dir.name}.yaml", cache, limits=(4, 2, n_test), max_new_tokens=12)
    with open(override, "a") as handle:
        handle.write(f"""    eval_batch_size: {batch_size}
trainer:
  precision: 32-true
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp_path / 'runs'}}}}}
  callbacks:
    - class_path: {__name__}.PauseAfterTestBatch
      init_args: {{seconds: {pause}}}
    - class_path: {__name__}.BatchLog
      init_args: {{path: {run_dir.parent / (run_dir.name + '-batches')}}}
    - class_path: dep_lightning.callbacks.TestMetricsWriter
""")
    return ["--config", str(ROOT / "configs" / "quickstart.yaml"), *extra, "--config", str(override),
            "--run_dir", str(run_dir)]


def launch(args: list[str], cwd: Path):
    return launch_cli(["test", *args], cwd)


def finish(proc) -> str:
    return finish_cli(proc, timeout=600)


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_during_test_then_rerun_completes_the_predictions_as_uninterrupted(tmp_path):
    whole_dir, killed_dir = tmp_path / "runs" / "run" / "whole", tmp_path / "runs" / "run" / "killed"
    whole = launch(write_test_config(tmp_path, whole_dir, pause=0.0), tmp_path)
    finish(whole)  # also fills the embedding cache the killed run then reads
    killed_args = write_test_config(tmp_path, killed_dir, pause=0.5)
    killed = launch(killed_args, tmp_path)
    part = killed_dir / "predictions" / "test.rank0.jsonl.part"
    deadline = time.monotonic() + 400
    while len(read_jsonl_prefix(part)) < 2:
        assert killed.poll() is None, killed.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no predictions appeared"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    written = [r["sample_id"] for r in read_jsonl_prefix(part)]
    print(f"killed after {len(written)} of {N_TEST} rows were written")
    assert 2 <= len(written) < N_TEST and not (killed_dir / "predictions" / "test.jsonl").exists()
    first_session = batches_run(killed_dir.parent / "killed-batches")

    log = finish(launch(killed_args, tmp_path))  # the same command again
    assert f"resuming test with {len(written)} samples" in log
    rerun = batches_run(killed_dir.parent / "killed-batches")[len(first_session):]
    print(f"first session started {len(first_session)} batches, the rerun {len(rerun)}")
    # The rerun generated exactly the batches whose rows had not been written.
    assert sorted(i for b in rerun for i in b) == sorted(set(r["sample_id"] for r in rows_of(whole_dir)) - set(written))

    resumed, uninterrupted = rows_of(killed_dir), rows_of(whole_dir)
    assert len(resumed) == N_TEST and len({r["sample_id"] for r in resumed}) == N_TEST
    assert resumed == uninterrupted  # predictions, token counts, per-sample scores, hygiene
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (killed_dir, whole_dir)]
    assert metrics[0]["overall"] == metrics[1]["overall"] and metrics[0]["overall"]["n"] == N_TEST
    assert metrics[0]["categories"] == metrics[1]["categories"]
    assert not list((killed_dir / "predictions").glob("*.part"))
    assert json.loads((killed_dir / "predictions" / "test.progress.json").read_text())["final"] is True

    # A third run finds everything done: it runs one batch (so the epoch end writes) and the same rows.
    log = finish(launch(killed_args, tmp_path))
    assert f"resuming test with {N_TEST} samples" in log
    assert len(batches_run(killed_dir.parent / "killed-batches")) == len(first_session) + len(rerun) + 1
    assert rows_of(killed_dir) == uninterrupted


# -- fewer test batches than processes ------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_with_one_test_batch_predict_each_sample_once(tmp_path):
    """2 test samples in 1 batch, 2 DDP processes (gloo): rank 1 has no batch of its own."""
    ddp = ("--config", str(ROOT / "configs" / "trainer" / "ddp.yaml"))
    one_dir, two_dir = tmp_path / "runs" / "run" / "one", tmp_path / "runs" / "run" / "two"
    finish(launch(write_test_config(tmp_path, one_dir, n_test=2, batch_size=2), tmp_path))
    log = finish(launch(write_test_config(tmp_path, two_dir, n_test=2, batch_size=2, extra=ddp), tmp_path))
    assert "zero length" not in log

    one = rows_of(one_dir)
    ids = sorted(r["sample_id"] for r in one)
    assert len(ids) == 2
    ranks = [batches_run(two_dir.parent / "two-batches", rank) for rank in (0, 1)]
    print(f"2 processes, batches run per rank: {ranks}")
    assert [sorted(i for b in r for i in b) for r in ranks] == [ids, ids]  # rank 1 ran a copy of the batch
    two = rows_of(two_dir)
    assert sorted(r["sample_id"] for r in two) == ids  # each sample once
    assert two == one  # the copy changed nothing: same rows as one process
    metrics = json.loads((two_dir / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 2 and metrics["hygiene"]["n"] == 2
    assert metrics["overall"] == json.loads((one_dir / "metrics.json").read_text())["overall"]
    assert not list((two_dir / "predictions").glob("*.part"))


def test_rows_are_reused_only_under_the_same_config_and_weights(tmp_path):
    """The progress key: the run's config hash and the trainable weights' fingerprint."""
    from types import SimpleNamespace

    import torch

    from dep_lightning.callbacks.predictions import PredictionWriter

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

    trainer = SimpleNamespace(is_global_zero=True, global_rank=0,
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))
    (tmp_path / "config.yaml").write_text("a: 1\n")
    module = Module()
    writer = PredictionWriter()
    writer.folder = tmp_path

    def session(rows: list[str]) -> set[str]:
        done = writer.start(trainer, module, "test")
        append_jsonl(writer._part("test", 0), [{"sample_id": i} for i in rows])
        return done

    assert session(["a/test/0"]) == set()
    assert session(["a/test/1"]) == {"a/test/0"}  # same key: resumed
    (tmp_path / "config.yaml").write_text("a: 2\n")
    assert session(["a/test/2"]) == set()  # another config: afresh, old rows dropped
    assert session([]) == {"a/test/2"}
    with torch.no_grad():
        module.layer.weight.add_(1.0)
    assert session([]) == set()  # other weights (another checkpoint): afresh


def test_score_rows_keep_one_copy_per_sample_and_condition():
    from dep_lightning.scoring import once_per_condition

    rows = [{"sample_id": "a/test/0", "condition": c, "nll": 1.0} for c in ("true", "swap", "true")]
    assert once_per_condition(rows, world_size=2) == rows[:2]
    assert once_per_condition(rows, world_size=1) == rows  # nothing is padded on one process
