"""Embedding cache under faults: damaged files are named with the way out, crashed builders
leave nothing that breaks the next one. (Concurrent builders: tests/embeddings/test_cache.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dep_lightning.embeddings.cache import CacheError, EmbeddingCache
from dep_lightning.embeddings.embedder import SentenceEmbedder
from tests.tolerances import TINY_ENCODER_F32_TOL

REPO = Path(__file__).resolve().parents[2]
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False}
TEXTS = [f"review {i}: the strings ring {'bright' if i % 2 else 'dull'} after {i} days" for i in range(12)]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    embedder = SentenceEmbedder(model="tiny")
    embedder.load()
    return embedder


def open_cache(root, embedder, **kwargs) -> EmbeddingCache:
    return EmbeddingCache(root, embedder, trainer_kwargs=TRAINER, **kwargs)


@pytest.fixture(scope="module")
def template(tmp_path_factory, embedder):
    """A two-shard cache, built once; each test damages its own copy."""
    root = tmp_path_factory.mktemp("template")
    cache = open_cache(root, embedder)
    cache.ensure(TEXTS[:8])
    cache.ensure(TEXTS[8:])
    return root, cache.lookup(TEXTS)


@pytest.fixture
def built(tmp_path, embedder, template):
    root, vectors = template
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    return open_cache(tmp_path, embedder), vectors


def edit_manifest(cache: EmbeddingCache, change) -> Path:
    path = cache.folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return path


DAMAGE = {
    "keys file truncated": (lambda c: _truncate(c.folder / "shard-000001.keys.npy", 5),
                            "shard-000001.keys.npy", "file size"),
    "vectors file emptied": (lambda c: (c.folder / "shard-000000.vectors.npy").write_bytes(b""),
                             "shard-000000.vectors.npy", "truncated or not a .npy"),
    "shard file missing": (lambda c: (c.folder / "shard-000001.vectors.npy").unlink(),
                           "shard-000001.vectors.npy", "missing"),
    "row count disagrees": (lambda c: edit_manifest(c, lambda m: m.update(rows=m["rows"] + 1)),
                            "manifest.json", "rows"),
    "dtype changed": (lambda c: edit_manifest(c, lambda m: m.update(dtype="float16")), "manifest.json", "dtype"),
    "dimension changed": (lambda c: edit_manifest(c, lambda m: m.update(dim=m["dim"] * 2)),
                          "shard-000000.vectors.npy", "manifest says"),
    "another model's cache": (lambda c: edit_manifest(c, lambda m: m.update(identity="0" * 16)),
                              "manifest.json", "identity"),
    "shard path escapes the folder": (lambda c: edit_manifest(c, lambda m: m["shards"][0].update(
        vectors="../elsewhere.npy")), "manifest.json", "malformed shard entry"),
    "not JSON": (lambda c: (c.folder / "manifest.json").write_text("{\"shards\": ["), "manifest.json", "unreadable"),
}


def _truncate(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_named_and_rebuild_recovers(built, tmp_path, embedder, damage):
    cache, before = built
    harm, file_name, problem = DAMAGE[damage]
    harm(cache)
    with pytest.raises(CacheError) as info:
        open_cache(tmp_path, embedder)
    message = str(info.value)
    assert str(cache.folder / file_name) in message and problem in message  # which file, what is wrong
    assert "rebuild" in message and str(cache.folder) in message  # and the way out
    fresh = open_cache(tmp_path, embedder, rebuild=True)
    assert len(fresh) == 0
    # Re-encoded in one call, not in the template's two: other batches, other matmul shapes.
    np.testing.assert_allclose(fresh.get(TEXTS), before, rtol=0, atol=TINY_ENCODER_F32_TOL)
    fresh.verify()


def test_a_shard_written_without_its_manifest_is_ignored_then_replaced(built, tmp_path, embedder):
    """A builder that died between writing a shard and committing the manifest."""
    cache, before = built
    orphan = cache.folder / "shard-000002.vectors.npy"
    orphan.write_bytes(b"half a shard")
    (cache.folder / ".shard-000002.keys.npy.tmp-99999-deadbeef").write_bytes(b"temp")
    reopened = open_cache(tmp_path, embedder)
    np.testing.assert_array_equal(reopened.lookup(TEXTS), before)  # the stored bytes, read back
    assert reopened.ensure(["one more review"]) == 1  # the next shard replaces the orphan
    reopened.verify()
    assert np.load(orphan, allow_pickle=False).shape[0] == 1


KILLED_BUILDER = """
    import sys, time
    from pathlib import Path
    from dep_lightning.embeddings.cache import EmbeddingCache
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    root, texts = sys.argv[1], sys.argv[2:]
    def hang(batch):  # holds the builder lock, mid-build, until killed
        Path(root, "building").touch()
        time.sleep(600)
    EmbeddingCache(root, SentenceEmbedder(model="tiny"), on_encode=hang,
                   trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False}).ensure(texts)
"""


@pytest.mark.slow
def test_a_builder_killed_while_holding_the_lock_blocks_nobody(built, tmp_path, embedder):
    cache, before = built
    new = ["a review nobody encoded yet", "and another one"]
    script = tmp_path / "builder.py"
    script.write_text(textwrap.dedent(KILLED_BUILDER))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), *new],
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while not (tmp_path / "building").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    started = time.monotonic()
    survivor = open_cache(tmp_path, embedder)
    assert survivor.ensure(TEXTS + new) == 2  # the kernel released the dead builder's lock
    assert time.monotonic() - started < 120
    survivor.verify()
    np.testing.assert_array_equal(survivor.lookup(TEXTS), before)  # stored before the kill, read back
    assert not list(survivor.folder.glob(".scratch-*"))
