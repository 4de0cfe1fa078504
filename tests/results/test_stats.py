"""Bootstrap intervals and paired tests; BLEU from resampled statistics equals sacreBLEU."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu

from dep_lightning.results import stats
from dep_lightning.results.stats import (
    MetricSamples,
    bleu_from_statistics,
    bleu_statistics,
    bootstrap_ci,
    paired_bootstrap,
    resample_counts,
)

WORDS = "the a good great bad book film music sound guitar strings play love hate it is was very not".split()


def corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 25))) + "."

    hyps, refs = [sentence() for _ in range(n)], [sentence() for _ in range(n)]
    hyps[1], hyps[2] = "", "a"  # no n-grams at all / no bigrams: sacreBLEU's early stops
    return hyps, refs


def test_bleu_of_statistics_equals_sacrebleu_on_full_and_resampled_corpora():
    hyps, refs = corpus(200, seed=0)
    table = bleu_statistics(hyps, refs)
    assert table.shape == (200, 10)
    full = sacrebleu.corpus_bleu(hyps, [refs]).score
    # BLEU from the same integer n-gram counts, float64 logs and exps on both sides: ~1e-13
    # on the 0-100 scale, so 1e-9 (here and below) is no constraint on the arithmetic.
    assert abs(float(bleu_from_statistics(table.sum(axis=0))) - full) < 1e-9
    assert abs(MetricSamples("bleu", table).point() - full) < 1e-9
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = rng.integers(0, 200, size=200)
        expected = sacrebleu.corpus_bleu([hyps[i] for i in index], [[refs[i] for i in index]]).score
        assert abs(float(bleu_from_statistics(table[index].sum(axis=0))) - expected) < 1e-9
    # Small prefixes hit every branch: orders without n-grams, smoothing of unmatched orders.
    for k in range(1, 8):
        expected = sacrebleu.corpus_bleu(hyps[:k], [refs[:k]]).score
        assert abs(float(bleu_from_statistics(table[:k].sum(axis=0))) - expected) < 1e-9


def test_resampled_bleu_estimates_equal_sacrebleu_of_each_resample():
    hyps, refs = corpus(30, seed=1)
    samples = MetricSamples("bleu", bleu_statistics(hyps, refs))
    weights = next(resample_counts(30, 5, seed=3))
    estimates = samples.estimate(weights)
    for row, estimate in zip(weights, estimates):
        index = np.repeat(np.arange(30), row.astype(int))
        expected = sacrebleu.corpus_bleu([hyps[i] for i in index], [[refs[i] for i in index]]).score
        assert abs(estimate - expected) < 1e-9


def test_resample_counts_are_seeded_and_independent_of_chunking(monkeypatch):
    whole = np.concatenate(list(resample_counts(50, 40, seed=7)))
    assert whole.shape == (40, 50) and np.all(whole.sum(axis=1) == 50)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 50 * 3)  # 3 resamples per chunk
    chunks = list(resample_counts(50, 40, seed=7))
    assert len(chunks) == 14
    assert np.array_equal(np.concatenate(chunks), whole)
    assert not np.array_equal(np.concatenate(list(resample_counts(50, 40, seed=8))), whole)


def test_interval_contains_point_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 640):
        samples = MetricSamples("meteor", rng.beta(2, 5, size=n))
        interval = bootstrap_ci(samples, n_resamples=1000, seed=0)
        assert interval.low < interval.estimate < interval.high
        assert interval.estimate == pytest.approx(samples.values.mean())
        assert interval.n == n
        widths.append(interval.high - interval.low)
    # Width scales like 1/sqrt(n): 16x the samples gives about a quarter of the width.
    assert widths[1] < widths[0] / 2.5


def test_bleu_interval_contains_corpus_bleu():
    hyps, refs = corpus(120, seed=2)
    refs = [ref if i % 3 else hyp for i, (hyp, ref) in enumerate(zip(hyps, refs))]  # some exact matches
    interval = bootstrap_ci(MetricSamples("bleu", bleu_statistics(hyps, refs)), n_resamples=500, seed=1)
    # The point estimate is BLEU of the summed counts: float64, as above.
    assert interval.estimate == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert interval.low < interval.estimate < interval.high


def test_interval_is_reproducible_for_a_seed():
    samples = MetricSamples("rouge1", np.random.default_rng(1).random(100))
    assert bootstrap_ci(samples, 200, seed=5) == bootstrap_ci(samples, 200, seed=5)
    assert bootstrap_ci(samples, 200, seed=5) != bootstrap_ci(samples, 200, seed=6)


def test_paired_bootstrap_identical_systems_are_not_different():
    values = np.random.default_rng(2).random(200)
    test = paired_bootstrap(MetricSamples("meteor", values), MetricSamples("meteor", values.copy()), 1000, seed=0)
    assert test.delta == 0.0
    assert test.p_value == pytest.approx(1.0)
    hyps, refs = corpus(80, seed=3)
    table = bleu_statistics(hyps, refs)
    test = paired_bootstrap(MetricSamples("bleu", table), MetricSamples("bleu", table.copy()), 1000, seed=0)
    assert test.p_value == pytest.approx(1.0)


def test_paired_bootstrap_detects_a_clearly_better_system():
    rng = np.random.default_rng(3)
    base = rng.random(200) * 0.5
    better = base + 0.05 + rng.normal(0, 0.02, size=200)  # better on average, noisy per sample
    test = paired_bootstrap(MetricSamples("meteor", better), MetricSamples("meteor", base), 1000, seed=0)
    assert test.delta == pytest.approx(better.mean() - base.mean())
    assert test.p_value < 0.05
    # Symmetric: the worse system against the better one is just as significant.
    reverse = paired_bootstrap(MetricSamples("meteor", base), MetricSamples("meteor", better), 1000, seed=0)
    assert reverse.delta == pytest.approx(-test.delta)
    assert reverse.p_value == pytest.approx(test.p_value)


def test_paired_bootstrap_bleu_clearly_better():
    _, refs = corpus(60, seed=4)
    refs = [r for r in refs if r != "."] or refs
    good = MetricSamples("bleu", bleu_statistics(refs, refs))  # outputs equal the references
    bad = MetricSamples("bleu", bleu_statistics(["zzz qqq xxx"] * len(refs), refs))
    test = paired_bootstrap(good, bad, 1000, seed=0)
    assert test.delta == pytest.approx(100.0)
    assert test.p_value < 0.05


def test_paired_bootstrap_is_calibrated_under_the_null():
    # Two systems from the same distribution: p < 0.05 in about 5% of data sets, not more.
    rng = np.random.default_rng(0)
    p_values = np.array([
        paired_bootstrap(MetricSamples("rouge1", rng.random(100)), MetricSamples("rouge1", rng.random(100)),
                         400, seed=i).p_value
        for i in range(300)
    ])
    assert 0.01 <= np.mean(p_values < 0.05) <= 0.10
    assert 0.12 <= np.mean(p_values < 0.2) <= 0.28


def test_paired_bootstrap_rejects_misaligned_samples():
    with pytest.raises(ValueError, match="share metric and size"):
        paired_bootstrap(MetricSamples("rouge1", np.ones(3)), MetricSamples("rouge1", np.ones(4)))
