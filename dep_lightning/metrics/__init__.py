"""Text generation metrics (ROUGE-1, METEOR, BLEU, BERTScore) as torchmetrics objects."""

from dep_lightning.metrics.text import (
    WORDNET_HINT,
    BertScoreF1,
    Bleu,
    Meteor,
    MetricSetupError,
    Rouge1,
    TextMetrics,
    meteor_tokenize,
    per_sample_scores,
    require_wordnet,
    score_predictions,
    unique_records,
)

__all__ = [
    "WORDNET_HINT",
    "BertScoreF1",
    "Bleu",
    "Meteor",
    "MetricSetupError",
    "Rouge1",
    "TextMetrics",
    "meteor_tokenize",
    "per_sample_scores",
    "require_wordnet",
    "score_predictions",
    "unique_records",
]
