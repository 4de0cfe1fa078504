"""Shared builders for tests: small real pipelines (tiny embedder, tiny backbone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dep_lightning.data.errors import ErrorLog
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.schema import PreparedData
from dep_lightning.data.sources import EmbeddedSource, ReviewSource

if TYPE_CHECKING:
    import subprocess


class InMemorySource(ReviewSource):
    """A source serving an already prepared dataset (lets tests edit data directly)."""

    def __init__(self, data: PreparedData):
        self.data = data

    def load(self, errors: ErrorLog, report: PreprocessReport) -> PreparedData:
        return self.data


def small_data(num_users: int = 40, seed: int = 0) -> PreparedData:
    return EmbeddedSource(num_users=num_users, num_items=36, seed=seed).load(ErrorLog(), PreprocessReport())


def small_datamodule(cache_dir, source: ReviewSource | None = None, **overrides):
    from dep_lightning.data.datamodule import DEPDataModule
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    settings = dict(source=source or InMemorySource(small_data()), embedder=SentenceEmbedder(model="tiny"),
                    cache_dir=str(cache_dir), k=3, limit_train=8, limit_val=4, limit_test=4, batch_size=2,
                    eval_batch_size=4, tokenizer="tiny")
    settings.update(overrides)
    return DEPDataModule(**settings)


def set_up(stage: str, cache_dir, source: ReviewSource | None = None, **overrides):
    """:func:`small_datamodule` after ``setup(stage)``."""
    datamodule = small_datamodule(cache_dir, source, **overrides)
    datamodule.setup(stage)
    return datamodule


def tiny_override(path, cache_dir, limits: tuple[int, int, int] = (4, 2, 4), max_new_tokens: int = 8,
                  save_dir=None):
    """Write a config layered on configs/quickstart.yaml that swaps in the tiny models and
    small sample caps (and, with ``save_dir``, moves the CSV logger there); returns its path."""
    from pathlib import Path

    train, val, test = limits
    text = f"""
model: {{init_args: {{backbone: tiny, generation: {{max_new_tokens: {max_new_tokens}}}}}}}
data:
  init_args:
    embedder: {{model: tiny}}
    cache_dir: {cache_dir}
    source: {{init_args: {{num_users: 40, num_items: 36}}}}
    limit_train: {train}
    limit_val: {val}
    limit_test: {test}
"""
    if save_dir is not None:
        text += f"trainer:\n  precision: 32-true\n  logger: {{init_args: {{save_dir: {save_dir}}}}}\n"
    path = Path(path)
    path.write_text(text)
    return path


def launch_cli(args: list[str], cwd) -> "subprocess.Popen":
    """``python -m dep_lightning <args>`` in ``cwd`` as a child process, its output in
    ``cwd/log-<n>.txt`` (``proc.log``); the repository on its path."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cwd = Path(cwd)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"}
    log = cwd / f"log-{len(list(cwd.glob('log-*')))}.txt"
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "dep_lightning", *args], cwd=cwd, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def finish_cli(proc, timeout: int = 600) -> str:
    """Wait for a :func:`launch_cli` child; its log, after asserting it exited 0."""
    proc.wait(timeout=timeout)
    text = proc.log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text
