"""Bootstrap uncertainty for table cells: 95% intervals and paired significance tests.

A cell's estimate is a function of per-sample values:

* ROUGE-1, METEOR, BERTScore and the hygiene rates are means of per-sample values;
* BLEU is sacreBLEU's corpus BLEU, a function of the *sums* of per-sample n-gram
  statistics (hypothesis length, closest reference length, matched and total n-grams of
  orders 1-4). The statistics come from sacreBLEU itself
  (``BLEU._extract_corpus_statistics``) and the score is sacreBLEU's ``compute_bleu``
  (exponential smoothing, no effective order) rewritten over numpy arrays, so that 1,000
  resampled corpora are scored in one pass. On the full corpus it equals
  ``sacrebleu.corpus_bleu``.

A bootstrap resample draws n sample indices with replacement; it is represented by how
often each sample was drawn (a row of a ``[resamples, n]`` count matrix), so an estimate
over all resamples is one matrix product. Intervals are percentile intervals. The
paired test draws the *same* indices for both systems and asks how often the resampled
difference strays from the observed one by at least the observed difference (the
null-shifted paired bootstrap): ``p = (1 + #{|d_b - d| >= |d|}) / (B + 1)``, two-sided.
Identical systems give ``d_b = d = 0`` for every resample and therefore ``p = 1``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

MAX_NGRAM_ORDER = 4
BLEU_TOKENIZE = "13a"  # as dep_lightning.metrics.text.Bleu
_LOG_ZERO = -9999999999.0  # sacreBLEU's floor for log(0)
_CHUNK_CELLS = 4_000_000  # resamples x samples per count matrix chunk (32 MB of float64)


def bleu_statistics(predictions: Sequence[str], references: Sequence[str], tokenize: str = BLEU_TOKENIZE) -> np.ndarray:
    """Per-sample BLEU sufficient statistics, ``[n, 2 + 2 * 4]``: hyp length, ref length,
    matched n-grams (orders 1-4), total hypothesis n-grams (orders 1-4)."""
    from sacrebleu.metrics import BLEU

    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    width = 2 + 2 * MAX_NGRAM_ORDER
    if not predictions:
        return np.zeros((0, width))
    bleu = BLEU(tokenize=tokenize, force=True)
    stats = bleu._extract_corpus_statistics(list(predictions), [list(references)])
    return np.asarray(stats, dtype=np.float64).reshape(len(predictions), width)


def bleu_from_statistics(stats: np.ndarray) -> np.ndarray:
    """sacreBLEU corpus BLEU (0-100) of summed statistics ``[..., 10]`` -> ``[...]``.

    Follows ``BLEU.compute_bleu`` with ``smooth_method="exp"`` and
    ``effective_order=False`` step by step: brevity penalty; 0 when nothing matched; per
    order, stop at the first order without hypothesis n-grams (its precision and all
    higher ones stay 0), otherwise precision = matched / total, or with no match the
    exponentially smoothed ``1 / (2^k * total)``; geometric mean over all four orders
    with log(0) floored as sacreBLEU does.
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct = stats[..., 2 : 2 + MAX_NGRAM_ORDER]
    total = stats[..., 2 + MAX_NGRAM_ORDER : 2 + 2 * MAX_NGRAM_ORDER]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1.0 - ref_len / sys_len), 0.0), 1.0)
        alive = np.ones(sys_len.shape, dtype=bool)
        smooth = np.ones(sys_len.shape)
        log_sum = np.zeros(sys_len.shape)
        for n in range(MAX_NGRAM_ORDER):
            alive &= total[..., n] != 0
            unmatched = alive & (correct[..., n] == 0)
            smooth = np.where(unmatched, smooth * 2.0, smooth)
            matched = 100.0 * correct[..., n] / total[..., n]
            precision = np.where(alive, np.where(unmatched, 100.0 / (smooth * total[..., n]), matched), 0.0)
            log_sum = log_sum + np.where(precision > 0, np.log(np.where(precision > 0, precision, 1.0)), _LOG_ZERO)
        score = bp * np.exp(log_sum / MAX_NGRAM_ORDER)
    return np.where(correct.sum(axis=-1) > 0, score, 0.0)


@dataclass(frozen=True)
class MetricSamples:
    """One metric's per-sample values for one set of samples.

    ``values`` is ``[n]`` for mean metrics and ``[n, 10]`` BLEU statistics for ``"bleu"``.
    """

    metric: str
    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        expected = 2 if self.metric == "bleu" else 1
        if values.ndim != expected:
            raise ValueError(f"{self.metric}: per-sample values must be {expected}-d, got shape {values.shape}")
        object.__setattr__(self, "values", values)

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def estimate(self, weights: np.ndarray) -> np.ndarray:
        """The metric for each row of sample weights ``[B, n]`` (counts of a resample)."""
        aggregated = weights @ self.values
        if self.metric == "bleu":
            return bleu_from_statistics(aggregated)
        return aggregated / weights.sum(axis=1)

    def point(self) -> float:
        return float(self.estimate(np.ones((1, self.n)))[0])

    def subset(self, index: np.ndarray) -> "MetricSamples":
        return MetricSamples(self.metric, self.values[index])


def _draw_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        index = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * n + index).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _single_chunk(n: int, n_resamples: int, seed: int) -> np.ndarray:
    counts = next(_draw_counts(n, n_resamples, seed))
    counts.flags.writeable = False
    return counts


def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` samples as count matrices, in chunks of rows.

    Row b of the concatenated chunks counts how often each sample index was drawn in
    resample b. The stream depends only on ``(n, n_resamples, seed)``, so two systems
    resampled with the same arguments are resampled jointly (paired). A stream that fits
    in one chunk is drawn once and reused (read-only) by every cell of that size.
    """
    if n <= 0:
        raise ValueError("cannot resample an empty set of samples")
    if n * n_resamples <= _CHUNK_CELLS:
        yield _single_chunk(n, n_resamples, seed)
    else:
        yield from _draw_counts(n, n_resamples, seed)


def bootstrap_estimates(samples: MetricSamples, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    return np.concatenate([samples.estimate(w) for w in resample_counts(samples.n, n_resamples, seed)])


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int


def bootstrap_ci(samples: MetricSamples, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of the metric over the samples."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    estimates = bootstrap_estimates(samples, n_resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return Interval(samples.point(), float(low), float(high), samples.n)


@dataclass(frozen=True)
class PairedTest:
    delta: float  # metric(a) - metric(b) on the full paired set
    p_value: float
    n: int


def paired_bootstrap(a: MetricSamples, b: MetricSamples, n_resamples: int = 1000, seed: int = 0) -> PairedTest:
    """Two-sided paired bootstrap test of ``a`` against ``b`` (aligned: same samples, same order)."""
    if a.metric != b.metric or a.n != b.n:
        raise ValueError(f"paired samples must share metric and size, got {a.metric}/{a.n} and {b.metric}/{b.n}")
    full = np.ones((1, a.n))
    delta = float(a.estimate(full)[0] - b.estimate(full)[0])
    extreme = 0
    for weights in resample_counts(a.n, n_resamples, seed):
        shifted = a.estimate(weights) - b.estimate(weights) - delta
        # A relative tolerance keeps floating-point noise from making an exact tie "less extreme".
        extreme += int(np.sum(np.abs(shifted) >= abs(delta) - 1e-12 * max(1.0, abs(delta))))
    return PairedTest(delta, (1 + extreme) / (1 + n_resamples), a.n)
