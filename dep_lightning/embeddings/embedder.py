"""The frozen sentence embedder, its content identity, and one Lightning predict run.

``SentenceEmbedder`` is plain configuration (LightningCLI/jsonargparse can build it from
YAML). Its ``identity`` keys the embedding cache: a hash of the model folder's content
plus every setting that changes the vectors, so two configurations never share vectors.

``PredictRun`` encodes a list of texts with ``Trainer.predict``. On one process results
stay in memory; under several processes each rank writes its rows, tagged with their
original indices, to a shared scratch folder and rank 0 scatters them back by index, so
every text lands exactly once whatever the sampler does.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from dep_lightning import assets
from dep_lightning.atomic import atomic_open

PoolingMode = Literal["model", "cls", "mean"]

# Files that never change the vectors; large exported copies (onnx, openvino) are skipped
# so hashing stays cheap.
_SKIP_DIRS = {".git", "onnx", "openvino"}
_SKIP_NAMES = {".gitattributes"}
_FULL_HASH_LIMIT = 512 * 2**20  # bytes; bigger weight files are sampled (head/middle/tail)
_SAMPLE = 4 * 2**20
_digest_memo: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so an identity costs one read."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key in _digest_memo:
        return _digest_memo[memo_key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if stat.st_size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: fh.read(2**20), b""):
                h.update(chunk)
        else:  # multi-GB checkpoints: size + three samples tell models apart in practice
            for offset in (0, stat.st_size // 2, stat.st_size - _SAMPLE):
                fh.seek(offset)
                h.update(fh.read(_SAMPLE))
    _digest_memo[memo_key] = h.hexdigest()
    return _digest_memo[memo_key]


def folder_fingerprint(folder: Path) -> str:
    """Hash of every file that defines the model: configs, tokenizer, weights."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if rel.parts[0] in _SKIP_DIRS or path.name in _SKIP_NAMES or path.suffix == ".md":
            continue
        h.update(f"{rel.as_posix()}\0{path.stat().st_size}\0{_file_digest(path)}\n".encode())
    return h.hexdigest()


def _pooling_classes():
    # sentence-transformers >= 6 moved the modules; 3.x-5.x keep them in `models`.
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Normalize, Pooling
    return Pooling, Normalize


@dataclass
class SentenceEmbedder:
    """A frozen sentence-transformers model and the settings that shape its vectors.

    ``pooling="cls"`` with ``normalize=True`` is what the DEP reference used; ``"model"``
    keeps the folder's own pooling module. ``normalize`` always decides the final L2
    normalisation (a ``Normalize`` module of the folder is dropped when it is False).
    ``dtype`` is the compute dtype; stored vectors are always float32.
    """

    model: str | None = None
    pooling: PoolingMode = "cls"
    normalize: bool = True
    max_seq_length: int = 256
    batch_size: int = 32
    dtype: str = "float32"
    _loaded: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pooling not in ("model", "cls", "mean"):
            raise ValueError(f"pooling must be 'model', 'cls' or 'mean', got {self.pooling!r}")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.batch_size < 1 or self.max_seq_length < 1:
            raise ValueError("batch_size and max_seq_length must be positive")

    @property
    def folder(self) -> Path:
        if self.model == "tiny":
            from dep_lightning.embeddings.tiny import tiny_sentence_model

            return tiny_sentence_model()
        folder = Path(self.model) if self.model else assets.minilm_path()
        if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
            raise FileNotFoundError(f"{folder}: not a local sentence-transformers model folder (no config.json)")
        return folder

    def settings(self) -> dict[str, Any]:
        """Everything besides the folder content that changes the vectors."""
        return {"pooling": self.pooling, "normalize": self.normalize,
                "max_seq_length": self.max_seq_length, "dtype": self.dtype}

    @property
    def identity(self) -> str:
        """16 hex characters naming (model content, settings); batch size is excluded."""
        payload = json.dumps({"model": folder_fingerprint(self.folder), **self.settings()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def load(self):
        """The configured SentenceTransformer on CPU (Lightning moves it), loaded once."""
        if self._loaded is None:
            from sentence_transformers import SentenceTransformer

            base = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
            modules = list(base)
            Pooling, Normalize = _pooling_classes()
            modules = [m for m in modules if not isinstance(m, Normalize)]
            if self.pooling != "model":
                at = next(i for i, m in enumerate(modules) if isinstance(m, Pooling))
                old = modules[at]  # the token-embedding width, named differently across versions
                width = getattr(old, "embedding_dimension", None) or old.word_embedding_dimension
                modules[at] = Pooling(width, pooling_mode=self.pooling)
            if self.normalize:
                modules.append(Normalize())
            model = SentenceTransformer(modules=modules, device="cpu")
            model.max_seq_length = self.max_seq_length
            model.requires_grad_(False).eval()
            self._loaded = model.to(getattr(torch, self.dtype))
        return self._loaded

    @property
    def dimension(self) -> int:
        model = self.load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())


class LengthBatches(Dataset):
    """This rank's share of pre-formed batches of (original indices, texts).

    Sorting by length keeps padding small; longest-first surfaces out-of-memory at once.
    Batches are dealt round-robin to ranks (balanced lengths). We shard ourselves instead
    of Lightning's sampler, which asserts when a rank would get no batch; such a rank gets
    a copy of batch 0, and the duplicate rows are dropped when results are scattered.
    """

    def __init__(self, texts: Sequence[str], batch_size: int, rank: int = 0, world_size: int = 1):
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = batches[rank::world_size] or batches[:1]
        self.texts = texts

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str]]:
        idx = self.batches[i]
        return torch.tensor(idx, dtype=torch.long), [self.texts[j] for j in idx]


class _EncoderModule(LightningModule):
    # With no texts at all every rank has an empty loader; that is not an error here.
    allow_zero_length_dataloader_with_multiple_devices = True

    def __init__(self, model, texts: list[str], batch_size: int, scratch: str, renormalize: bool = False):
        super().__init__()
        self.model = model
        self.texts, self.batch_size, self.scratch = texts, batch_size, scratch
        self.renormalize = renormalize

    def predict_dataloader(self) -> DataLoader:
        # Runs after the process group exists: rank 0's text list and scratch folder win,
        # so all ranks shard the same list even if they read the manifest at other times.
        strategy = self.trainer.strategy
        digest = _list_digest(self.texts)
        head_digest, self.scratch = strategy.broadcast((digest, self.scratch), src=0)
        if strategy.reduce_boolean_decision(head_digest != digest, all=False):
            self.texts = strategy.broadcast(self.texts, src=0)
        batches = LengthBatches(self.texts, self.batch_size, self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(batches, batch_size=None, num_workers=0)

    def predict_step(self, batch, batch_idx: int):
        idx, texts = batch
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in preprocess(list(texts)).items()}
        vectors = self.model(features)["sentence_embedding"].float()
        if self.renormalize:  # a bf16/fp16 Normalize leaves norms ~1e-3 off; redo it in float32
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return idx, vectors


class _EmbeddingWriter(BasePredictionWriter):
    """Keeps this rank's (indices, vectors); under several processes saves them to scratch."""

    def __init__(self):
        super().__init__(write_interval="batch")
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        idx, vectors = prediction
        self.parts.append((idx.cpu().numpy(), vectors.cpu().numpy()))

    def on_predict_end(self, trainer, pl_module) -> None:
        if trainer.world_size > 1 and self.parts:
            idx, vectors = _concat(self.parts)
            base = Path(pl_module.scratch) / f"rank{trainer.global_rank:05d}"
            for suffix, array in ((".idx.npy", idx), (".vec.npy", vectors)):
                with atomic_open(base.with_suffix(suffix), "wb") as fh:
                    np.save(fh, array, allow_pickle=False)
            self.parts = []


def _list_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text in texts:  # length-prefixed, so ["a", "b"] and ["ab"] differ
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class PredictRun:
    """One Trainer for encoding; knows whether this process is the primary rank."""

    DEFAULTS: dict[str, Any] = dict(
        accelerator="auto", devices=1, strategy="auto", logger=False, enable_checkpointing=False,
        enable_progress_bar=True, enable_model_summary=False, inference_mode=True,
    )

    def __init__(self, embedder: SentenceEmbedder, trainer_kwargs: dict[str, Any] | None = None):
        kwargs = {**self.DEFAULTS, **(trainer_kwargs or {})}
        self.writer = _EmbeddingWriter()
        # Progress lines when stdout is a log file (a bar would stay silent until the end).
        from dep_lightning.callbacks.progress import LogProgress

        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.writer, LogProgress(every_n_seconds=30)]
        kwargs["use_distributed_sampler"] = False  # LengthBatches shards by rank itself
        self.embedder = embedder
        self.trainer = Trainer(**kwargs)

    @property
    def primary(self) -> bool:
        return self.trainer.global_rank == 0

    @property
    def distributed(self) -> bool:
        return self.trainer.world_size > 1

    def barrier(self, name: str) -> None:
        if self.distributed:
            self.trainer.strategy.barrier(name)

    def encode(self, texts: list[str], scratch: Path) -> np.ndarray | None:
        """(len(texts), d) float32 in input order on the primary rank, None elsewhere.

        Every rank of a distributed job must call this with the same ``scratch`` folder
        (a shared filesystem across nodes); rank 0's ``texts`` are the ones encoded.
        """
        e = self.embedder
        renormalize = e.normalize and e.dtype != "float32"
        module = _EncoderModule(e.load(), list(texts), e.batch_size, str(scratch), renormalize)
        self.writer.parts = []
        with warnings.catch_warnings():
            # Indices travel inside each batch, so Lightning's own batch-index tracking is not needed.
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
            self.trainer.predict(module, return_predictions=False)
        self.barrier("embedding-scratch-written")
        if not self.primary:
            return None
        n = len(module.texts)
        if self.distributed:
            ranks = sorted(Path(scratch).glob("rank*.idx.npy"))
            parts = [(np.load(p, allow_pickle=False),
                      np.load(p.with_name(p.name.replace(".idx", ".vec")), allow_pickle=False)) for p in ranks]
        else:
            parts, self.writer.parts = self.writer.parts, []
        if n == 0:
            return np.zeros((0, self.embedder.dimension), np.float32)
        idx, vectors = _concat(parts)
        out = np.empty((n, vectors.shape[1]), np.float32)
        seen = np.zeros(n, bool)
        out[idx] = vectors  # a padded duplicate batch writes the same rows twice
        seen[idx] = True
        if not seen.all():
            raise RuntimeError(f"predict returned {int(seen.sum())} of {n} embeddings; "
                               f"rank results are missing in {scratch}")
        return out
