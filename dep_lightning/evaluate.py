"""``dep-lightning evaluate``: score any predictions file(s) with the framework's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from dep_lightning.data.errors import InputError
from dep_lightning.metrics import score_predictions


def read_predictions(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(str(path), number, None, line.strip(), "malformed JSON", exc.msg) from None
            for field in ("prediction", "reference"):
                if not isinstance(row.get(field), str):
                    raise InputError(str(path), number, field, row.get(field), "missing field" if field not in row
                                     else "wrong type", "expected a string")
            row.setdefault("sample_id", f"{path}:{number}")
            row.setdefault("category", "all")
            rows.append(row)
    return rows


def evaluate(predictions: list[str], bertscore: bool = False, out: str | None = None) -> dict:
    """Score JSON-lines predictions (fields: prediction, reference; optional sample_id, category).

    Args:
        predictions: one or more JSON-lines files; rows with the same sample_id count once.
        bertscore: also compute BERTScore F1 (slow on CPU).
        out: write the scores as JSON to this file.
    """
    from dep_lightning.callbacks.evaluation import metrics_table

    rows = [row for path in predictions for row in read_predictions(Path(path))]
    scores = score_predictions(rows, bertscore=bertscore)
    print(metrics_table(scores))
    if out:
        Path(out).write_text(json.dumps(scores, indent=2) + "\n")
    return scores
