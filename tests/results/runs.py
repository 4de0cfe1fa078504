"""Writes run directories in the docs/runs.md format, as the training code does."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

DEFAULT_ABLATION = {"refinement": "sae", "embeddings": "his+diff", "with_text": True, "guidance": True, "k": 4,
                    "retriever": "recency"}
WORDS = ("sound guitar strings warm bright tone neck frets cheap solid build case pedal cable amp loud quiet "
         "great poor value price shipping quality feel play love hate works broke return").split()


def reference_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(n)]


def manifest(method: str = "dep", seed: int | None = 0, backbone: str = "smollm2-135m-instruct", **ablation) -> dict:
    return {
        "schema": 1,
        "method": method,
        "ablation": {**DEFAULT_ABLATION, **ablation},
        "seed": seed,
        "backbone": backbone,
        "data": {"source": "EmbeddedSource", "categories": ["Books", "CDs_and_Vinyl"], "n_test": 16,
                 "limit_test": None},
        "trainable_parameters": 1000,
        "code_version": "0.1.0",
        "config_hash": f"{method}-{seed}",
        "created": "2026-01-01T00:00:00+00:00",
    }


def write_run(
    folder: Path,
    scores: dict[str, dict[str, float]],
    method: str = "dep",
    seed: int | None = 0,
    predictions: str | None = "reference",
    per_category: int = 8,
    uniqueness: dict | None = None,
    hygiene: dict | None = None,
    backbone: str = "smollm2-135m-instruct",
    **ablation: Any,
) -> Path:
    """A run directory whose metrics.json holds ``scores`` per category.

    ``predictions``: ``"reference"`` (outputs equal the references), ``"garbage"`` (no word
    in common) or None (no predictions file). Per-sample ROUGE-1 / METEOR / BERTScore equal
    the category's value for every sample, so their means equal metrics.json.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest(method, seed, backbone, **ablation)))
    n_total = per_category * len(scores)
    overall = {"n": n_total}
    for metric in ("rouge1", "meteor", "bleu", "bertscore"):
        if all(metric in values for values in scores.values()):
            overall[metric] = sum(values[metric] for values in scores.values()) / len(scores)
    metrics = {
        "categories": {category: {"n": per_category, **values} for category, values in scores.items()},
        "overall": overall,
        "hygiene": hygiene or {"n": n_total, "copy_n": 8, "copy_rate": 0.125, "mean_longest_copy": 4.5,
                               "limit_rate": 0.5, "echo_rate": 0.0},
        "uniqueness": uniqueness,
        "backbone": backbone,
        "config_hash": "x",
        "predictions": str(folder / "predictions" / "test.jsonl"),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        rows = []
        for c, (category, values) in enumerate(scores.items()):
            references = reference_texts(per_category, seed=c)
            for i, reference in enumerate(references):
                prediction = reference if predictions == "reference" else "zzz qqq xxx yyy"
                rows.append({
                    "sample_id": f"{category}/test/{i}", "user_id": f"u{i}", "item_id": f"i{i}", "category": category,
                    "reference": reference, "prediction": prediction, "history": [],
                    "generated_tokens": 10, "hit_limit": i % 2 == 0,
                    "scores": {k: values[k] for k in ("rouge1", "meteor", "bertscore") if k in values},
                    "longest_copy": 4 if i else 8, "copied": i == 0, "echo": False,
                })
        (folder / "predictions").mkdir(exist_ok=True)
        (folder / "predictions" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
