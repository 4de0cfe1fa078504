"""The embedding cache: encode-once, exact vectors, damage detection, concurrent builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dep_lightning.embeddings.cache import CacheError, EmbeddingCache, MissingTextsError, text_key
from dep_lightning.embeddings.embedder import LengthBatches, SentenceEmbedder
from tests.tolerances import ENCODER_F32_TOL, F32_EPS

REPO = Path(__file__).resolve().parents[2]
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False}
PAIRS = [(w, a) for w in ("guitar", "tuner", "capo", "cable", "pedal")
         for a in ("great", "thin", "bright", "muddy", "ok", "odd")]
TEXTS = [f"Review {i}: the {w} sounds {a}." for i, (w, a) in enumerate(PAIRS)]  # 30 short distinct texts


@pytest.fixture(scope="module")
def cls_embedder() -> SentenceEmbedder:
    embedder = SentenceEmbedder(batch_size=8)
    embedder.load()  # once per module: each test reuses the loaded model
    return embedder


@pytest.fixture(scope="module")
def mean_embedder() -> SentenceEmbedder:
    embedder = SentenceEmbedder(pooling="mean", batch_size=8)
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def plain_model(cls_embedder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(cls_embedder.folder), device="cpu", local_files_only=True)


def open_cache(root, embedder, counter: Counter | None = None, **kwargs) -> EmbeddingCache:
    hook = counter.update if counter is not None else None
    return EmbeddingCache(root, embedder, trainer_kwargs=TRAINER, on_encode=hook, **kwargs)


def test_each_text_is_encoded_once_across_runs(tmp_path, cls_embedder):
    counter: Counter = Counter()
    first = open_cache(tmp_path, cls_embedder, counter)
    assert first.ensure(TEXTS[:20] + TEXTS[:5] + TEXTS[3:8]) == 20  # duplicates inside one call
    assert first.encode_calls == 1 and first.encoded_texts == 20

    second = open_cache(tmp_path, cls_embedder, counter)  # a later run on the same root
    assert len(second) == 20
    assert second.ensure(TEXTS[:20]) == 0
    assert second.ensure(TEXTS) == 10  # only the new data
    assert second.encode_calls == 1 and second.encoded_texts == 10
    assert first.lookup(TEXTS).shape == (30, 384)  # the first object sees the second's shard
    assert set(counter) == set(TEXTS) and set(counter.values()) == {1}
    np.testing.assert_array_equal(second.get(TEXTS[::-1]), second.lookup(TEXTS)[::-1])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vectors_equal_sentence_transformers(tmp_path, pooling, cls_embedder, mean_embedder, plain_model):
    embedder = cls_embedder if pooling == "cls" else mean_embedder
    got = open_cache(tmp_path, embedder).get(TEXTS)
    tokens = plain_model.encode(TEXTS, output_value="token_embeddings", convert_to_numpy=False)
    pooled = np.stack([(t[0] if pooling == "cls" else t.mean(0)).cpu().numpy() for t in tokens])
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    # Same encoder, other batches and pooling code: float32 passes (tests/tolerances.py).
    np.testing.assert_allclose(got, expected, rtol=0, atol=ENCODER_F32_TOL)
    # Normalised in float32, then 384 squares summed by numpy (pairwise): <= ~log2(384) eps.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=0, atol=16 * F32_EPS)
    if pooling == "mean":  # MiniLM's own configuration is mean + Normalize
        np.testing.assert_allclose(got, plain_model.encode(TEXTS), rtol=0, atol=ENCODER_F32_TOL)


def test_pooling_and_settings_change_identity(tmp_path, cls_embedder, mean_embedder):
    assert cls_embedder.identity != mean_embedder.identity
    cls_cache, mean_cache = open_cache(tmp_path, cls_embedder), open_cache(tmp_path, mean_embedder)
    assert cls_cache.folder != mean_cache.folder
    a, b = cls_cache.get(TEXTS[:4]), mean_cache.get(TEXTS[:4])
    assert np.abs(a - b).max() > 0.05
    assert len({p.name for p in tmp_path.iterdir()}) == 2
    variants = [SentenceEmbedder(pooling="model"), SentenceEmbedder(normalize=False),
                SentenceEmbedder(max_seq_length=128), SentenceEmbedder(dtype="bfloat16")]
    identities = {e.identity for e in variants} | {cls_embedder.identity}
    assert len(identities) == 5
    assert SentenceEmbedder(batch_size=3).identity == cls_embedder.identity  # batch size never changes vectors


def test_missing_texts_error(tmp_path, cls_embedder):
    cache = open_cache(tmp_path, cls_embedder)
    cache.ensure(TEXTS[:2])
    with pytest.raises(KeyError) as info:
        cache.lookup([TEXTS[0], "never cached", "also not"])
    assert isinstance(info.value, MissingTextsError)
    assert "2 of 3 texts are not in the embedding cache" in str(info.value)
    assert cache.lookup([]).shape == (0, 384)


def test_truncated_shard_is_reported_and_rebuild_recovers(tmp_path, cls_embedder):
    cache = open_cache(tmp_path, cls_embedder)
    before = cache.get(TEXTS[:6])
    shard = cache.folder / "shard-000000.vectors.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CacheError, match="shard-000000.vectors.npy") as info:
        open_cache(tmp_path, cls_embedder)
    assert "rebuild" in str(info.value) and str(cache.folder) in str(info.value)

    fresh = open_cache(tmp_path, cls_embedder, rebuild=True)
    assert len(fresh) == 0
    # The same six texts in the same single batch, same process: the same float32 passes.
    np.testing.assert_array_equal(fresh.get(TEXTS[:6]), before)
    fresh.verify()


def test_corrupt_manifest_is_reported(tmp_path, cls_embedder):
    cache = open_cache(tmp_path, cls_embedder)
    cache.ensure(TEXTS[:3])
    manifest = cache.folder / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(CacheError, match="manifest.json.*unreadable"):
        open_cache(tmp_path, cls_embedder)
    # valid JSON, but written for another model
    manifest.write_text(json.dumps({"format": 1, "identity": "0" * 16, "dim": 384, "dtype": "float32", "shards": []}))
    with pytest.raises(CacheError, match="identity"):
        open_cache(tmp_path, cls_embedder)
    assert open_cache(tmp_path, cls_embedder, rebuild=True).ensure(TEXTS[:3]) == 3


def test_verify_catches_flipped_bytes(tmp_path, cls_embedder):
    cache = open_cache(tmp_path, cls_embedder)
    cache.ensure(TEXTS[:4])
    cache.verify()
    shard = cache.folder / "shard-000000.vectors.npy"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF  # same size, different content: only the checksum can tell
    shard.write_bytes(bytes(data))
    reopened = open_cache(tmp_path, cls_embedder)
    with pytest.raises(CacheError, match="checksum"):
        reopened.verify()
    assert reopened.rebuild(TEXTS[:4]) == 4
    reopened.verify()


def test_files_are_plain_npy_and_json(tmp_path, cls_embedder):
    cache = open_cache(tmp_path, cls_embedder)
    cache.ensure(TEXTS[:5])
    cache.ensure(TEXTS[5:7])
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["rows"] == 7 and manifest["dim"] == 384 and len(manifest["shards"]) == 2
    names = sorted(p.name for p in cache.folder.glob("*.npy"))
    assert len(names) == 4
    for name in names:
        array = np.load(cache.folder / name, allow_pickle=False)
        assert array.dtype in (np.float32, np.uint8)
    keys = np.load(cache.folder / "shard-000001.keys.npy", allow_pickle=False)
    assert keys.shape == (2, 16) and keys[0].tobytes() == text_key(TEXTS[5])


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), max_size=40), batch_size=st.integers(1, 7), world=st.integers(1, 5))
def test_length_batches_cover_every_index(lengths, batch_size, world):
    texts = ["x" * n for n in lengths]
    seen = Counter()
    for rank in range(world):
        part = LengthBatches(texts, batch_size, rank, world)
        for i in range(len(part)):
            idx, batch = part[i]
            assert batch == [texts[j] for j in idx.tolist()] and len(batch) <= batch_size
            assert [len(t) for t in batch] == sorted((len(t) for t in batch), reverse=True)
            seen.update(idx.tolist())
    assert set(seen) == set(range(len(texts)))
    n_batches = -(-len(texts) // batch_size)
    if n_batches >= world:  # padding duplicates only when a rank would get nothing
        assert set(seen.values()) <= {1}


def _run_script(tmp_path: Path, source: str, *args: str, timeout: int = 240) -> list[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, str(script), *a], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in args]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


BUILDER = """
    import json, sys, time
    from pathlib import Path
    from dep_lightning.embeddings.cache import EmbeddingCache
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    root, me, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    encoded = []
    def slow_hook(batch):  # hold the lock a while so the other builder must wait for it
        encoded.extend(batch)
        time.sleep(1.5)
    cache = EmbeddingCache(root, SentenceEmbedder(batch_size=8), on_encode=slow_hook,
                           trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    cache.embedder.load()
    Path(root, f"ready-{me}").touch()
    while len(list(Path(root).glob("ready-*"))) < 2:  # start both builds together
        time.sleep(0.05)
    n = cache.ensure(texts)
    print(json.dumps({"n": n, "encoded": encoded, "len": len(cache)}))
"""


@pytest.mark.slow
def test_two_builder_processes_at_once(tmp_path, cls_embedder):
    a, b = TEXTS[:18], TEXTS[10:]  # 8 texts overlap
    outs = _run_script(tmp_path, BUILDER, (str(tmp_path), "a", json.dumps(a)), (str(tmp_path), "b", json.dumps(b)))
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    encoded = [t for r in results for t in r["encoded"]]
    assert sorted(encoded) == sorted(TEXTS)  # each text encoded by exactly one builder
    assert sum(r["n"] for r in results) == 30
    assert max(r["len"] for r in results) == 30
    cache = open_cache(tmp_path, cls_embedder)
    cache.verify()
    assert len(cache) == 30
    reference = open_cache(tmp_path / "single", cls_embedder).get(TEXTS)
    # Two builders encoded other batches than one call here: float32 passes (tests/tolerances.py).
    np.testing.assert_allclose(cache.lookup(TEXTS), reference, rtol=0, atol=ENCODER_F32_TOL)


DDP = """
    import json, os, sys
    from dep_lightning.embeddings.cache import EmbeddingCache
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    texts = json.loads(sys.argv[2])
    cache = EmbeddingCache(sys.argv[1], SentenceEmbedder(batch_size=4), trainer_kwargs={
        "accelerator": "cpu", "devices": 2, "strategy": "ddp", "enable_progress_bar": False})
    first = cache.ensure(texts[:9])  # 3 batches over 2 ranks
    second = cache.ensure(texts)     # 1 new text: one rank gets a padded duplicate batch
    # One file per rank: both ranks share stdout, where their lines can interleave.
    rank = int(os.environ.get("LOCAL_RANK", 0))
    with open(os.path.join(sys.argv[3], f"rank-{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "n": [first, second], "len": len(cache)}, handle)
"""


@pytest.mark.slow
def test_ddp_predict_encodes_every_text_once(tmp_path, cls_embedder):
    texts = TEXTS[:9] + TEXTS[:3] + [TEXTS[20]]
    results = tmp_path / "results"
    results.mkdir()
    _run_script(tmp_path, DDP, (str(tmp_path), json.dumps(texts), str(results)), timeout=400)
    lines = [json.loads(path.read_text()) for path in sorted(results.glob("rank-*.json"))]
    assert [line["rank"] for line in lines] == [0, 1]
    assert lines[0]["n"] == [9, 1]
    assert all(line["len"] == 10 for line in lines)
    cache = open_cache(tmp_path, cls_embedder)
    cache.verify()
    reference = open_cache(tmp_path / "single", cls_embedder).get(texts)
    # Batches of 4 on two ranks vs 8 here: float32 passes of other shapes (tests/tolerances.py).
    np.testing.assert_allclose(cache.lookup(texts), reference, rtol=0, atol=ENCODER_F32_TOL)
