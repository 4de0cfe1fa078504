"""An append-only, content-addressed store of sentence embeddings.

Layout under ``root/<embedder identity>/``::

    manifest.json               shard list: rows, dim, dtype, identity, sha256 per file
    shard-000000.vectors.npy    float32 [n, d]   (np.save, no pickle; read with mmap)
    shard-000000.keys.npy       uint8   [n, 16]  blake2b-128 of each UTF-8 text
    .lock                       fcntl.flock target serialising builders

Every text is encoded once per embedder identity: ``ensure`` takes the lock, re-reads the
manifest, encodes only what is still missing and appends one shard. Shards are written to
a temporary name, fsynced and renamed (:mod:`dep_lightning.atomic`); the manifest is renamed
into place last, so a reader never sees a shard that is not complete. Readers take no lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dep_lightning.atomic import atomic_open, atomic_write
from dep_lightning.embeddings.embedder import PredictRun, SentenceEmbedder

log = logging.getLogger(__name__)

FORMAT = 1
KEY_BYTES = 16
MANIFEST = "manifest.json"


def text_key(text: str) -> bytes:
    """The cache key of a text: blake2b-128 of its UTF-8 bytes."""
    if not isinstance(text, str):
        raise TypeError(f"texts must be str, got {type(text).__name__}: {text!r:.60}")
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


class CacheError(RuntimeError):
    """The cache on disk is unusable; the message names the file and the way out."""


class MissingTextsError(KeyError):
    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class _HashingFile:
    """File wrapper that hashes what np.save writes, so no second read is needed."""

    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


class EmbeddingCache:
    """Embeddings of texts under one embedder, encoded once and read back memory-mapped.

    ``trainer_kwargs`` override the predict Trainer (``accelerator``, ``devices``,
    ``strategy``, ``num_nodes``...). ``on_encode`` is called with the texts about to be
    encoded (tests count them). ``rebuild=True`` wipes a damaged cache instead of raising.
    """

    def __init__(
        self,
        root: str | Path,
        embedder: SentenceEmbedder | None = None,
        *,
        trainer_kwargs: dict[str, Any] | None = None,
        on_encode: Callable[[list[str]], None] | None = None,
        rebuild: bool = False,
    ):
        self.embedder = embedder or SentenceEmbedder()
        self.identity = self.embedder.identity
        self.folder = Path(root) / self.identity
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.on_encode = on_encode
        self.encode_calls = 0  # predict runs started by this object
        self.encoded_texts = 0  # texts those runs encoded
        self._reset()
        if rebuild:
            self.rebuild()
        else:
            self._refresh()

    # ------------------------------------------------------------------ reading
    def _reset(self) -> None:
        self._entries: list[dict] = []
        self._vectors: list[np.ndarray] = []
        self._starts: list[int] = []
        self._index: dict[bytes, int] = {}
        self._dim: int | None = None

    def _fail(self, path: Path, problem: str) -> CacheError:
        return CacheError(
            f"{path}: {problem}. The embedding cache in {self.folder} is damaged; rebuild it with "
            f"EmbeddingCache(root, embedder, rebuild=True) (or .rebuild() on an open cache), "
            f"or delete {self.folder} and run again."
        )

    def _read_manifest(self) -> dict:
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            return {"shards": []}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._fail(path, f"manifest is unreadable ({exc})") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
            raise self._fail(path, "manifest has no shard list")
        expected = {"format": FORMAT, "identity": self.identity, "dtype": "float32"}
        for name, value in expected.items():
            if manifest.get(name) != value:
                raise self._fail(path, f"manifest {name} is {manifest.get(name)!r}, expected {value!r}")
        if not isinstance(manifest.get("dim"), int) or manifest["dim"] < 1:
            raise self._fail(path, f"manifest dim is {manifest.get('dim')!r}")
        try:
            counted = sum(int(entry["rows"]) for entry in manifest["shards"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._fail(path, f"malformed shard entry ({exc!r})") from exc
        if manifest.get("rows") != counted:
            raise self._fail(path, f"manifest counts {manifest.get('rows')!r} rows but its shards list {counted}")
        return manifest

    def _open_array(self, path: Path, shape: tuple[int, int], dtype: str) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise self._fail(path, "shard file listed in the manifest is missing") from exc
        except (OSError, ValueError, EOFError) as exc:  # truncated header or data; EOFError: an empty file
            raise self._fail(path, f"shard file is truncated or not a .npy array ({exc})") from exc
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise self._fail(path, f"holds {array.dtype}{list(array.shape)}, manifest says {dtype}{list(shape)}")
        if array.offset + array.nbytes != path.stat().st_size:
            raise self._fail(path, f"file size {path.stat().st_size} does not match its {shape[0]} rows")
        return array

    def _refresh(self) -> None:
        """Catch up with the manifest; shards are append-only, so only new ones are opened."""
        manifest = self._read_manifest()
        shards = manifest["shards"]
        if shards[: len(self._entries)] != self._entries or (self._entries and manifest["dim"] != self._dim):
            self._reset()  # someone rebuilt the cache: start over
        for entry in shards[len(self._entries):]:
            try:
                rows, files = int(entry["rows"]), (entry["vectors"], entry["keys"])
                checksums = (entry["sha256"]["vectors"], entry["sha256"]["keys"])
            except (KeyError, TypeError, ValueError) as exc:
                raise self._fail(self.folder / MANIFEST, f"malformed shard entry {entry!r:.120}") from exc
            if any(Path(f).name != f for f in files) or not all(isinstance(c, str) for c in checksums):
                raise self._fail(self.folder / MANIFEST, f"malformed shard entry {entry!r:.120}")
            vectors = self._open_array(self.folder / files[0], (rows, manifest["dim"]), "float32")
            keys = self._open_array(self.folder / files[1], (rows, KEY_BYTES), "uint8")
            start = len(self._index)
            raw = keys.tobytes()
            for row in range(rows):
                key = raw[row * KEY_BYTES : (row + 1) * KEY_BYTES]
                if self._index.setdefault(key, start + row) != start + row:
                    raise self._fail(self.folder / files[1], "a text key appears twice in the cache")
            self._entries.append(entry)
            self._vectors.append(vectors)
            self._starts.append(start)
        self._dim = manifest.get("dim")

    def __len__(self) -> int:
        return len(self._index)

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.embedder.dimension

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._index

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 in input order; raises MissingTextsError if any is absent."""
        keys = [text_key(t) for t in texts]
        if any(k not in self._index for k in keys):
            self._refresh()  # another process may have added them since
        missing = [t for t, k in zip(texts, keys) if k not in self._index]
        if missing:
            raise MissingTextsError(
                f"{len(missing)} of {len(texts)} texts are not in the embedding cache {self.folder} "
                f"(first: {missing[0][:60]!r}); call ensure() or get() first"
            )
        out = np.empty((len(keys), self.dim), np.float32)
        if not keys:
            return out
        rows = np.fromiter((self._index[k] for k in keys), np.int64, len(keys))
        shard_of = np.searchsorted(np.asarray(self._starts), rows, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self._vectors[shard][rows[mask] - self._starts[shard]]
        return out

    def by_key(self) -> dict[bytes, np.ndarray]:
        """Every cached vector by its text key (``text_key``), e.g. to compare two caches."""
        self._refresh()
        out = {}
        for key, row in self._index.items():
            shard = int(np.searchsorted(np.asarray(self._starts), row, side="right")) - 1
            out[key] = np.asarray(self._vectors[shard][row - self._starts[shard]])
        return out

    def verify(self) -> None:
        """Re-read every shard and compare it with the manifest's sha256 (slow: reads all)."""
        self._refresh()
        for entry in self._entries:
            for kind in ("vectors", "keys"):
                path = self.folder / entry[kind]
                if _sha256(path) != entry["sha256"][kind]:
                    raise self._fail(path, "checksum does not match the manifest")

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                log.info("waiting for another builder of %s", self.folder)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _missing(self, texts: Sequence[str]) -> tuple[list[str], list[bytes]]:
        """Distinct uncached texts in first-seen order, with their keys."""
        todo: dict[bytes, str] = {}
        for text in texts:
            key = text_key(text)
            if key not in self._index:
                todo.setdefault(key, text)
        return list(todo.values()), list(todo.keys())

    def ensure(self, texts: Sequence[str]) -> int:
        """Encode the distinct texts not cached yet; returns how many this process encoded.

        Under a multi-process Trainer every rank must call this with the same texts; rank 0
        holds the lock, encodes together with the other ranks and writes the shard.
        """
        self._refresh()
        todo, _ = self._missing(texts)
        if not todo:
            return 0
        run = PredictRun(self.embedder, self.trainer_kwargs)
        scratch = self.folder / f".scratch-{uuid.uuid4().hex}"
        if not run.primary:  # rank 0's texts and scratch folder are broadcast inside predict
            run.encode(todo, scratch)
            run.barrier("embedding-shard-written")
            self._refresh()
            return 0
        try:
            with self._locked():
                self._refresh()  # a builder we waited for may have added some
                todo, keys = self._missing(texts)
                if not todo and not run.distributed:
                    return 0
                if run.distributed:
                    scratch.mkdir()
                if todo and self.on_encode is not None:
                    self.on_encode(list(todo))
                if todo:
                    print(f"Embedding {len(todo):,} new texts with {self.embedder.folder.name} into {self.folder}",
                          flush=True)
                vectors = run.encode(todo, scratch)
                self.encode_calls += bool(todo)
                self.encoded_texts += len(todo)
                if todo:
                    self._append(keys, vectors)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        run.barrier("embedding-shard-written")
        return len(todo)

    def get(self, texts: Sequence[str]) -> np.ndarray:
        self.ensure(texts)
        return self.lookup(texts)

    def _save(self, name: str, array: np.ndarray) -> str:
        """Write ``array`` to ``name`` atomically; returns its sha256."""
        with atomic_open(self.folder / name, "wb") as fh:
            hashing = _HashingFile(fh)
            np.save(hashing, array, allow_pickle=False)
        return hashing.sha.hexdigest()

    def _append(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Add one shard (caller holds the lock and has refreshed)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self._dim or vectors.shape[1]):
            raise CacheError(
                f"{self.folder}: new vectors have shape {vectors.shape}, expected ({len(keys)}, {self._dim}); "
                "the model changed without changing its identity? Delete the folder and rebuild."
            )
        stem = f"shard-{len(self._entries):06d}"
        entry = {"vectors": f"{stem}.vectors.npy", "keys": f"{stem}.keys.npy", "rows": len(keys), "sha256": {}}
        entry["sha256"]["vectors"] = self._save(entry["vectors"], vectors)
        key_array = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), KEY_BYTES)
        entry["sha256"]["keys"] = self._save(entry["keys"], key_array)
        shards = [*self._entries, entry]
        manifest = {
            "format": FORMAT, "identity": self.identity, "dim": int(vectors.shape[1]), "dtype": "float32",
            "rows": sum(s["rows"] for s in shards),
            "model": {"folder": str(self.embedder.folder), **self.embedder.settings()},
            "shards": shards,
        }
        atomic_write(self.folder / MANIFEST, json.dumps(manifest, indent=1))  # the commit point
        self._refresh()

    def rebuild(self, texts: Sequence[str] | None = None) -> int:
        """Delete everything cached for this identity, then encode ``texts`` if given."""
        with self._locked():
            (self.folder / MANIFEST).unlink(missing_ok=True)  # first: readers now see an empty cache
            for path in self.folder.iterdir():
                if path.name == ".lock":
                    continue
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            self._reset()
        return self.ensure(texts) if texts is not None else 0

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.folder)!r}, texts={len(self)}, dim={self._dim})"
