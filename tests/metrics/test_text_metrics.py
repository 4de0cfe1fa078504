"""Text metrics equal their reference libraries; every sample counts once, also under DDP."""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import nltk
import pytest
import torch

from dep_lightning.metrics import (
    WORDNET_HINT,
    BertScoreF1,
    Bleu,
    Meteor,
    MetricSetupError,
    Rouge1,
    TextMetrics,
    meteor_tokenize,
    score_predictions,
)
from tests.tolerances import ENCODER_F32_TOL

REPO = Path(__file__).resolve().parents[2]
REVIEWS = REPO.parent / "shared" / "data" / "reviews_Musical_Instruments_5.json.gz"
DDP_SCRIPT = Path(__file__).with_name("ddp_metrics_script.py")
N_PAIRS = 240


def _wordnet_available() -> bool:
    try:
        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        return False


needs_wordnet = pytest.mark.skipif(
    not _wordnet_available(), reason="WordNet not installed (bash scripts/install_wordnet.sh .venv/nltk_data)"
)


@pytest.fixture(scope="module")
def review_pairs() -> dict[str, list[str]]:
    """240 deterministic real pairs: per user (file order), first review vs second review.

    ``preds`` / ``refs`` are the review texts, ``pred_summaries`` / ``ref_summaries``
    the short review titles of the same reviews.
    """
    if not REVIEWS.is_file():
        pytest.skip(f"real review data not found at {REVIEWS} (../shared/data beside the checkout)")
    by_user: dict[str, list[dict]] = {}
    with gzip.open(REVIEWS, "rt", encoding="utf-8") as handle:
        for line in handle:
            review = json.loads(line)
            by_user.setdefault(review["reviewerID"], []).append(review)
    users = [user for user, reviews in by_user.items() if len(reviews) >= 2][:N_PAIRS]
    assert len(users) == N_PAIRS
    return {
        "ids": users,
        "preds": [by_user[u][0]["reviewText"] for u in users],
        "refs": [by_user[u][1]["reviewText"] for u in users],
        "pred_summaries": [by_user[u][0]["summary"] for u in users],
        "ref_summaries": [by_user[u][1]["summary"] for u in users],
    }


def _update_in_batches(metric, preds, refs, ids=None, batch=16):
    for start in range(0, len(preds), batch):
        chunk = slice(start, start + batch)
        metric.update(preds[chunk], refs[chunk], None if ids is None else ids[chunk])
    return float(metric.compute())


# ------------------------------------------------------------------------------------
# Parity with the reference libraries on real reviews


def test_rouge1_equals_rouge_score(review_pairs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    pairs = list(zip(review_pairs["preds"], review_pairs["refs"]))
    expected = sum(scorer.score(ref, pred)["rouge1"].fmeasure for pred, ref in pairs) / len(pairs)
    got = _update_in_batches(Rouge1(), review_pairs["preds"], review_pairs["refs"], review_pairs["ids"])
    # Same rouge_score call per pair, float64 means (fsum vs sum) of 240 values in [0, 1]: ~1e-16.
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.05 < got < 0.6


@needs_wordnet
def test_meteor_equals_nltk_meteor(review_pairs):
    from nltk.translate.meteor_score import meteor_score

    pairs = list(zip(review_pairs["preds"], review_pairs["refs"]))
    expected = sum(
        meteor_score([meteor_tokenize(ref)], meteor_tokenize(pred), alpha=0.9, beta=3, gamma=0.5) for pred, ref in pairs
    ) / len(pairs)
    got = _update_in_batches(Meteor(), review_pairs["preds"], review_pairs["refs"], review_pairs["ids"])
    # Same NLTK call per pair, float64 means (fsum vs sum) of 240 values in [0, 1]: ~1e-16.
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.05 < got < 0.6


def test_bleu_equals_sacrebleu_corpus_bleu(review_pairs):
    import sacrebleu

    expected = sacrebleu.corpus_bleu(review_pairs["preds"], [review_pairs["refs"]], tokenize="13a").score
    got = _update_in_batches(Bleu(), review_pairs["preds"], review_pairs["refs"], review_pairs["ids"])
    assert got == pytest.approx(expected, abs=1e-9)  # one sacreBLEU call on the same strings: float64, identical
    assert 0 < got < 100
    # corpus-level: not the mean of sentence BLEUs
    sentence_mean = sum(
        sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(review_pairs["preds"], review_pairs["refs"])
    ) / N_PAIRS
    assert abs(got - sentence_mean) > 1e-3


def test_meteor_tokenize_splits_sentences_without_punkt():
    assert meteor_tokenize("It works. Great value!  Don't buy (seriously)?") == [
        "It", "works", ".", "Great", "value", "!", "Do", "n't", "buy", "(", "seriously", ")", "?",
    ]  # fmt: skip
    assert meteor_tokenize("  ") == []


def _reference_bertscore(preds: list[str], refs: list[str], folder: str) -> list[float]:
    """Straightforward BERTScore F1: one text per forward pass, explicit loops over tokens."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}

    def embed(text):
        ids = tokenizer(text.strip(), truncation=True, max_length=512, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            states = model(input_ids=ids).last_hidden_state[0]
        return ids[0].tolist(), states

    def greedy(ids_a, emb_a, emb_b):
        best = []
        for token, vector in zip(ids_a, emb_a):
            if token in special:
                continue
            best.append(float(torch.cosine_similarity(vector.unsqueeze(0), emb_b, dim=-1).max()))
        return sum(best) / len(best)

    scores = []
    for pred, ref in zip(preds, refs):
        (hyp_ids, hyp), (ref_ids, ref_emb) = embed(pred), embed(ref)
        precision, recall = greedy(hyp_ids, hyp, ref_emb), greedy(ref_ids, ref_emb, hyp)
        scores.append(2 * precision * recall / (precision + recall))
    return scores


def test_bertscore_equals_loop_reference_on_real_titles(review_pairs):
    """240 short real pairs (review titles) against a loop-based reference with the same MiniLM."""
    preds, refs = review_pairs["pred_summaries"], review_pairs["ref_summaries"]
    metric = BertScoreF1(batch_size=16)
    got = _update_in_batches(metric, preds, refs, review_pairs["ids"], batch=64)
    expected = _reference_bertscore(preds, refs, metric.model_path)
    per_pair = [score for _, score in metric.records]
    # Same definition, float32 encoder passes of other batch compositions (tests/tolerances.py).
    assert max(abs(a - b) for a, b in zip(per_pair, expected)) < ENCODER_F32_TOL
    assert got == pytest.approx(sum(expected) / len(expected), abs=ENCODER_F32_TOL)
    assert 0.1 < got < 1


def test_bertscore_equals_bert_score_package_on_real_titles(review_pairs):
    bert_score = pytest.importorskip("bert_score", reason="bert-score not installed (optional reference)")
    preds, refs = review_pairs["pred_summaries"], review_pairs["ref_summaries"]
    metric = BertScoreF1()
    metric.update(preds, refs)
    # batch_size=1: bert_score pads within a batch and lets padding count as a 0 similarity
    # (see BertScoreF1); without padding it computes the paper's definition.
    _, _, f1 = bert_score.score(
        preds, refs, model_type=metric.model_path, num_layers=6, idf=False, batch_size=1, device="cpu"
    )
    per_pair = torch.tensor([score for _, score in metric.records], dtype=torch.float64)
    # Same definition, float32 encoder passes of other batch compositions (tests/tolerances.py).
    assert (per_pair - f1.double()).abs().max() < ENCODER_F32_TOL
    assert float(metric.compute()) == pytest.approx(float(f1.mean()), abs=ENCODER_F32_TOL)


@pytest.mark.slow
def test_bertscore_equals_bert_score_package_on_real_reviews(review_pairs):
    """Full review texts (some truncated at 512 tokens); ~40-80 s on 2 cores for both."""
    bert_score = pytest.importorskip("bert_score", reason="bert-score not installed (optional reference)")
    preds, refs = review_pairs["preds"][:200], review_pairs["refs"][:200]
    metric = BertScoreF1()
    got = _update_in_batches(metric, preds, refs, review_pairs["ids"][:200], batch=100)
    _, _, f1 = bert_score.score(
        preds, refs, model_type=metric.model_path, num_layers=6, idf=False, batch_size=1, device="cpu"
    )
    per_pair = torch.tensor([score for _, score in metric.records], dtype=torch.float64)
    # Same definition, float32 encoder passes of other batch compositions (tests/tolerances.py).
    assert (per_pair - f1.double()).abs().max() < ENCODER_F32_TOL
    assert got == pytest.approx(float(f1.mean()), abs=ENCODER_F32_TOL)


def test_bertscore_layer_and_empty_text():
    last, first = BertScoreF1(), BertScoreF1(num_layers=1)
    for metric in (last, first):
        metric.update(["the strings sound bright", ""], ["bright sounding strings", "not empty"])
    assert [score for _, score in last.records][1] == 0.0  # empty candidate scores 0, as in bert_score
    assert last.records[0][1] != pytest.approx(first.records[0][1], abs=1e-3)
    with pytest.raises(ValueError, match="layers"):
        BertScoreF1(num_layers=7).update(["a"], ["b"])
    with pytest.raises(MetricSetupError, match="config.json"):
        BertScoreF1(model_path="/nonexistent/model")


# ------------------------------------------------------------------------------------
# Every sample counts once


PAIRS = [
    ("the tuner holds pitch well", "this tuner keeps the pitch well"),
    ("cheap strings that broke fast", "the strings broke after a week"),
    ("great cable, no hum at all", "a quiet cable without hum"),
    ("the pedal is noisy", "quiet pedal, works fine"),
]


@pytest.mark.parametrize("make", [Rouge1, Bleu, BertScoreF1, pytest.param(Meteor, marks=needs_wordnet)])
def test_duplicated_ids_count_once(make):
    preds, refs = zip(*PAIRS)
    unique = make()
    unique.update(list(preds), list(refs), ids=["a", "b", "c", "d"])
    duplicated = make()
    duplicated.update(list(preds[:3]), list(refs[:3]), ids=torch.tensor([0, 1, 2]))
    duplicated.update([preds[3], preds[0], preds[2]], [refs[3], refs[0], refs[2]], ids=torch.tensor([3, 0, 2]))
    # BERTScore encodes the texts in other batches (float32, tests/tolerances.py); the others
    # score each pair with the same float64 code on the same strings, so they agree exactly.
    tol = ENCODER_F32_TOL if make is BertScoreF1 else 1e-9
    assert float(duplicated.compute()) == pytest.approx(float(unique.compute()), abs=tol)
    without_ids = make()
    without_ids.update(list(preds) + [preds[0], preds[0]], list(refs) + [refs[0], refs[0]])
    assert float(without_ids.compute()) != pytest.approx(float(unique.compute()), abs=max(tol, 1e-6))


def test_metric_object_behaviour():
    metric = Rouge1()
    batch_value = metric(["a b c"], ["a b d"], ids=["x"])  # forward: batch value, accumulates
    assert float(batch_value) == pytest.approx(2 / 3)
    metric.update("a b", "c d", ids="y")  # single strings are one pair
    metric.to("cpu").to(torch.float64)  # object states survive device/dtype moves
    assert float(metric.compute()) == pytest.approx(1 / 3)
    assert metric.compute().dtype == torch.float64
    metric.reset()
    assert metric.records == []
    with pytest.raises(ValueError, match="references"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="sample ids"):
        metric.update(["a", "b"], ["a", "b"], ids=[1])


@needs_wordnet
def test_text_metrics_collection_keys_and_prefix():
    preds, refs = zip(*PAIRS)
    fast = TextMetrics(bertscore=False, prefix="val/")
    fast.update(list(preds), list(refs), ids=[1, 2, 3, 4])
    assert set(fast.compute()) == {"val/rouge1", "val/meteor", "val/bleu"}
    full = TextMetrics()
    full.update(list(preds), list(refs))
    values = full.compute()
    assert set(values) == {"rouge1", "meteor", "bleu", "bertscore"}
    single = BertScoreF1()
    single.update(list(preds), list(refs))
    # The same texts in the same single batch through the same cached encoder: identical passes.
    assert float(values["bertscore"]) == pytest.approx(float(single.compute()), abs=1e-9)


@needs_wordnet
@pytest.mark.parametrize("bertscore", [False, True])
def test_score_predictions_per_category_and_overall(bertscore):
    rows = [
        {"sample_id": f"{cat}/test/{i}", "category": cat, "prediction": p, "reference": r}
        for i, (cat, (p, r)) in enumerate(zip(["Books", "CDs", "Books", "CDs"], PAIRS))
    ]
    scores = score_predictions(rows + [dict(rows[0]), dict(rows[3])], bertscore=bertscore)  # padded duplicates
    names = {"rouge1", "meteor", "bleu"} | ({"bertscore"} if bertscore else set())
    assert set(scores) == {"overall", "categories"}
    assert set(scores["categories"]) == {"Books", "CDs"}
    assert scores["overall"]["n"] == 4 and scores["categories"]["Books"]["n"] == 2
    for category, subset in (("Books", [rows[0], rows[2]]), ("CDs", [rows[1], rows[3]]), (None, rows)):
        expected = TextMetrics(bertscore=bertscore)
        expected.update([r["prediction"] for r in subset], [r["reference"] for r in subset])
        got = scores["overall"] if category is None else scores["categories"][category]
        assert set(got) == names | {"n"}
        for name, value in expected.compute().items():
            # Overall BERTScore reuses the per-category encoder passes, `expected` encodes all
            # four pairs in one batch: float32, other shapes (tests/tolerances.py). ROUGE-1,
            # METEOR and BLEU are float64 scores of the same strings by the same code.
            tol = ENCODER_F32_TOL if name == "bertscore" else 1e-9
            assert got[name] == pytest.approx(float(value), abs=tol), (category, name)
    assert score_predictions([]) == {"overall": {"n": 0}, "categories": {}}
    with pytest.raises(KeyError, match="category"):
        score_predictions([{"sample_id": 1, "prediction": "a", "reference": "b"}])


# ------------------------------------------------------------------------------------
# METEOR without WordNet


def test_meteor_without_wordnet_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(MetricSetupError) as error:
        Meteor()
    assert str(error.value) == WORDNET_HINT
    assert "make setup" in str(error.value) and "scripts/install_wordnet.sh" in str(error.value)


# ------------------------------------------------------------------------------------
# DDP: two gloo processes, padded DistributedSampler shards


def _synthetic_pairs(n: int) -> dict[str, list]:
    rng = random.Random(0)
    words = "the a guitar strings tuner pedal sound bright warm cheap great cable amp noise works well fine".split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))  # noqa: E731
    return {
        "ids": [f"Music/test/{i}" for i in range(n)],
        "preds": [sentence() for _ in range(n)],
        "refs": [sentence() for _ in range(n)],
    }


@needs_wordnet
@pytest.mark.slow
def test_ddp_synced_metrics_equal_single_process(tmp_path):
    data = _synthetic_pairs(21)  # odd: the sampler repeats sample 0 at the end of rank 1's shard
    pairs_path = tmp_path / "pairs.json"
    pairs_path.write_text(json.dumps(data))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DDP_SCRIPT), str(pairs_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"DDP script: {time.monotonic() - started:.1f} s")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    shards = [r["shard"] for r in ranks]
    assert sorted(shards[0] + shards[1]) == sorted(list(range(21)) + [0])  # one padded duplicate
    assert [r["local_records"] for r in ranks] == [11, 11]

    single = TextMetrics()
    single.update(data["preds"], data["refs"], ids=data["ids"])
    expected = {name: float(value) for name, value in single.compute().items()}
    padded = Rouge1()
    padded.update([data["preds"][i] for i in shards[0] + shards[1]], [data["refs"][i] for i in shards[0] + shards[1]])
    for rank in ranks:
        for name in ("rouge1", "meteor", "bleu"):  # float64 scores of the same strings by the same code
            assert rank[name] == pytest.approx(expected[name], abs=1e-9), name
        # Batches of 4 per rank (1 thread) vs 32 here: float32 encoder passes (tests/tolerances.py).
        assert rank["bertscore"] == pytest.approx(expected["bertscore"], abs=ENCODER_F32_TOL)
        # without ids the padded duplicate counts twice, as it would with a tensor "cat" state
        assert rank["rouge1_without_ids"] == pytest.approx(float(padded.compute()), abs=1e-9)
        assert not math.isclose(rank["rouge1_without_ids"], expected["rouge1"], abs_tol=1e-6)
