"""Embedding cache build vs plain SentenceTransformer.encode, measured side by side.

    python bench/bench_embedding_cache.py            # 256 real reviews
    python bench/bench_embedding_cache.py --n 64     # quicker

Reads the first N distinct ``reviewText`` values of the 5-core Musical Instruments dump
(``../shared/data`` beside the repo root), then times on the same texts and batch size:
plain ``encode`` on the configured model, a cache build into an empty folder (Lightning
predict + shard writing), and a second build by a fresh cache object with nothing new.
The model is loaded and warmed up before any timing. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from dep_lightning.embeddings.cache import EmbeddingCache  # noqa: E402
from dep_lightning.embeddings.embedder import SentenceEmbedder  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "reviews_Musical_Instruments_5.json.gz"


def read_reviews(path: Path, n: int) -> list[str]:
    texts: dict[str, None] = {}  # ordered set: the first n distinct texts
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line).get("reviewText") or ""
            if text.strip():
                texts.setdefault(text)
                if len(texts) == n:
                    break
    return list(texts)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="number of review texts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pooling", default="cls", choices=["cls", "mean", "model"])
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    print(machine_line())

    texts = read_reviews(args.data, args.n)
    embedder = SentenceEmbedder(pooling=args.pooling, batch_size=args.batch_size)
    model = embedder.load()
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up: allocator, kernels
    trainer_kwargs = {"accelerator": args.accelerator, "enable_progress_bar": False}

    plain_s, plain = timed(lambda: model.encode(texts, batch_size=args.batch_size, show_progress_bar=False))
    with tempfile.TemporaryDirectory() as root:
        cache = EmbeddingCache(root, embedder, trainer_kwargs=trainer_kwargs)
        build_s, encoded = timed(lambda: cache.ensure(texts))
        # A second run: a fresh object re-reads the manifest and finds nothing to encode.
        again_s, again = timed(lambda: EmbeddingCache(root, embedder, trainer_kwargs=trainer_kwargs).ensure(texts))
        lookup_s, vectors = timed(lambda: cache.lookup(texts))
        n_files = len(list(Path(cache.folder).glob("*.npy")))
    assert encoded == len(texts) and again == 0 and n_files == 2
    max_diff = float(np.abs(vectors - np.asarray(plain, np.float32)).max())

    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"\n{len(texts)} reviews (mean {words:.0f} words), batch {args.batch_size}, pooling {args.pooling}, "
          f"device {model.device}; max |cache - encode| = {max_diff:.2e}\n")
    print("| step | seconds | texts/s | ratio |")
    print("|---|---:|---:|---|")
    print(f"| plain `SentenceTransformer.encode` | {plain_s:.2f} | {len(texts) / plain_s:.1f} | 1.00 (reference) |")
    print(f"| cache build (Lightning predict + shard) | {build_s:.2f} | {len(texts) / build_s:.1f} "
          f"| {plain_s / build_s:.2f}x encode throughput |")
    print(f"| second build, nothing new (open + ensure) | {again_s:.3f} | {len(texts) / again_s:.0f} "
          f"| {again_s / build_s:.4f}x first build time |")
    print(f"| lookup of all texts (mmap) | {lookup_s:.4f} | {len(texts) / lookup_s:.0f} | |")


if __name__ == "__main__":
    main()
