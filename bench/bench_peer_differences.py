"""Vectorised peer differences vs a naive per-pair Python loop, measured side by side.

    PYTHONPATH=. python bench/bench_peer_differences.py            # 1M reviews x 384 dims
    PYTHONPATH=. python bench/bench_peer_differences.py --reviews 100000 --items 10000

Synthetic corpus: float32 unit vectors, item popularity Zipf-like (p_k ~ 1 / k^s over
--items items).  Every review is a corpus row (in_corpus=True), so its diff is
e - (S_i - e) / (n_i - 1).  The naive loop (the reference's style: for every review, loop
over the other reviewers of its item) runs on a random subsample and is extrapolated per
review to the full corpus; both paths are compared on that subsample.

Memory: the vectorised build + differences run twice, once timed and once under
tracemalloc (numpy reports its buffers to tracemalloc); its peak is the Python/numpy
allocation high-water mark of build + differences, *excluding* the input matrix allocated
beforehand but *including* the float32 result and the float64 per-item sums.
(ru_maxrss is not used: data generation already set a higher process peak.)
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from _common import machine_line

from dep_lightning.embeddings.peers import build_peer_stats, peer_differences

MiB = 1024 * 1024


def synthetic_corpus(n: int, d: int, n_items: int, s: float, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** s
    codes = rng.choice(n_items, size=n, p=p / p.sum())
    names = np.array([f"B{k:09d}" for k in rng.permutation(n_items)])
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return names[codes].tolist(), vectors


def vectorised(items: list[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    t0 = time.perf_counter()
    stats = build_peer_stats(items, vectors)
    t1 = time.perf_counter()
    diff, has = peer_differences(stats, items, vectors, in_corpus=True)
    return diff, has, t1 - t0, time.perf_counter() - t1


def naive(items: list[str], vectors: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
    """Per review, an explicit loop over its peers (the per-item row lists are set-up, untimed)."""
    rows_of: dict[str, list[int]] = {}
    for r, item in enumerate(items):
        rows_of.setdefault(item, []).append(r)
    out = np.zeros((len(rows), vectors.shape[1]))
    t0 = time.perf_counter()
    for k, r in enumerate(rows):
        e = vectors[r].astype(np.float64)
        acc, n = np.zeros_like(e), 0
        for j in rows_of[items[r]]:
            if j != r:
                acc += e - vectors[j]
                n += 1
        if n:
            out[k] = acc / n
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reviews", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--zipf", type=float, default=0.8, help="popularity exponent s (0.8: top item ~2%% of reviews)")
    ap.add_argument("--subsample", type=int, default=2000, help="reviews timed with the naive loop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(machine_line())

    items, vectors = synthetic_corpus(args.reviews, args.dim, args.items, args.zipf, args.seed)
    counts = np.unique(np.asarray(items), return_counts=True)[1]
    print(
        f"corpus: {args.reviews:,} reviews x {args.dim} float32 ({vectors.nbytes / MiB:,.0f} MiB), "
        f"{len(counts):,} items reviewed (zipf s={args.zipf}; max {counts.max():,}, median {np.median(counts):.0f} "
        f"reviews/item; a random review has {(counts**2).sum() / args.reviews:,.0f} co-reviews on average)"
    )

    # Run 1 is "cold": the first touch of ~GBs of fresh pages costs real (system) time on a
    # VM; run 2 reuses freed memory.  Both are printed; the ratio uses the cold run.
    times = []
    for _ in range(2):
        diff, has, t_build, t_diff = vectorised(items, vectors)
        times.append((t_build, t_diff))
        del diff, has
    (t_build, t_diff), (w_build, w_diff) = times
    tracemalloc.start()
    diff, has, *_ = vectorised(items, vectors)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    sample = min(args.subsample, args.reviews)
    rows = np.random.default_rng(args.seed + 1).choice(args.reviews, size=sample, replace=False)
    slow, t_naive = naive(items, vectors, rows)
    max_err = float(np.abs(slow - diff[rows]).max())
    per_review_naive = t_naive / len(rows)
    t_vec = t_build + t_diff
    naive_total = per_review_naive * args.reviews

    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| vectorised build_peer_stats, cold / warm run | {t_build:.2f} s / {w_build:.2f} s |")
    print(f"| vectorised peer_differences, cold / warm run | {t_diff:.2f} s / {w_diff:.2f} s |")
    print(f"| vectorised total, cold ({args.reviews:,} reviews) | {t_vec:.2f} s "
          f"({t_vec / args.reviews * 1e6:.2f} µs/review) |")
    print(f"| naive per-pair loop, {len(rows):,}-review sample | {t_naive:.2f} s "
          f"({per_review_naive * 1e6:,.0f} µs/review) |")
    print(f"| naive extrapolated to {args.reviews:,} reviews | {naive_total:,.0f} s ({naive_total / 3600:.1f} h) |")
    print(f"| speed ratio naive / vectorised (cold / warm) | {naive_total / t_vec:,.0f}x / "
          f"{naive_total / (w_build + w_diff):,.0f}x |")
    sums_bytes = len(counts) * args.dim * 8
    print(f"| peak memory, build + differences (tracemalloc) | {peak / MiB:,.0f} MiB |")
    print(f"| of which: float32 result / float64 item sums / working set | {diff.nbytes / MiB:,.0f} / "
          f"{sums_bytes / MiB:,.0f} / {(peak - diff.nbytes - sums_bytes) / MiB:,.0f} MiB |")
    print(f"| max abs difference naive vs vectorised (sample) | {max_err:.2e} |")
    print(f"| reviews with peers | {has.mean():.1%} |")
    assert max_err < 1e-5, "vectorised and naive peer differences disagree"


if __name__ == "__main__":
    main()
