"""``dep-lightning evaluate``: score any predictions file(s) with the framework's metrics.

Each file is scored on its own — its own table, its own n — unless a union is asked for:
two runs' files scored together share sample ids, and one run's rows would hide the
other's. Within what is scored together a sample id stands for one sample: repeats with
the same prediction, reference and category (DDP padding writes some) count once and
are reported; a repeat that differs is an error naming both lines, never a silent choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dep_lightning.data.errors import InputError, show_value
from dep_lightning.data.readers.records import numbered_lines
from dep_lightning.metrics import score_predictions

#: Fields a repeated sample id must agree on; other fields (per-sample scores) may differ.
_SAME = ("prediction", "reference", "category")


@dataclass
class Predictions:
    """The rows scored together, one per sample id, and the lines reading them passed over."""

    paths: list[str]
    rows: list[dict] = field(default_factory=list)
    first: dict[Any, tuple[str, int, dict]] = field(default_factory=dict)
    repeats: int = 0
    blank_lines: int = 0

    def add(self, path: str, line: int, row: dict) -> None:
        """Keep ``row`` unless its sample id was seen: then it must be the same sample."""
        sample_id = row["sample_id"]
        if sample_id not in self.first:
            self.first[sample_id] = (path, line, row)
            self.rows.append(row)
            return
        first_path, first_line, first = self.first[sample_id]
        for name in _SAME:
            if row[name] != first[name]:
                raise InputError(path, line, name, row[name], "conflicting duplicate sample_id",
                                 f"sample_id {show_value(sample_id)} is also on {first_path}:{first_line} "
                                 f"with {name} {show_value(first[name])}")
        self.repeats += 1

    def counts(self) -> dict[str, Any]:
        return {"files": list(self.paths), "samples": len(self.rows), "identical_repeats": self.repeats,
                "blank_lines": self.blank_lines}

    def summary(self) -> str:
        name = " + ".join(self.paths) + (" (union)" if len(self.paths) > 1 else "")
        return (f"{name}: {len(self.rows)} samples; {self.repeats} identical repeated row(s) counted once; "
                f"{self.blank_lines} blank line(s)")


def read_predictions(path: Path, into: Predictions) -> None:
    """Add one JSON-lines file's rows (``.gz`` read transparently) to ``into``; a file without
    any row is an error."""
    before = len(into.rows) + into.repeats
    for number, raw in numbered_lines(path):  # plain or gzipped; a directory or damaged gzip is an InputError
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(str(path), number, None, raw[max(0, exc.start - 20) : exc.end + 20],
                             "undecodable bytes", f"not UTF-8 at byte {exc.start}") from None
        if not line.strip():
            into.blank_lines += 1
            continue
        into.add(str(path), number, _parse_row(path, number, line))
    if len(into.rows) + into.repeats == before:
        raise InputError(str(path), None, None, "no rows", "empty file",
                         "expected JSON lines with prediction and reference")


def _parse_row(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), number, None, line.strip(), "malformed JSON", exc.msg) from None
    except RecursionError:  # json's parser recurses per nesting level
        raise InputError(str(path), number, None, line.strip(), "malformed JSON", "nested too deeply") from None
    if not isinstance(row, dict):
        raise InputError(str(path), number, None, row, "malformed JSON", "expected an object")
    for name in ("prediction", "reference"):
        if not isinstance(row.get(name), str):
            raise InputError(str(path), number, name, row.get(name), "missing field" if name not in row
                             else "wrong type", "expected a string")
    # The sample id is a dictionary key and the category a table row: both must be plain values.
    sample_id = row.setdefault("sample_id", f"{path}:{number}")
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)):
        raise InputError(str(path), number, "sample_id", sample_id, "wrong type", "expected a string or an integer")
    if not isinstance(row.setdefault("category", "all"), str):
        raise InputError(str(path), number, "category", row["category"], "wrong type", "expected a string")
    return row


def _distinct(paths: list[str]) -> None:
    seen: set[Path] = set()
    for path in paths:
        if Path(path).resolve() in seen:
            raise InputError(path, None, None, path, "file given twice", "each file is read once; drop the repeat")
        seen.add(Path(path).resolve())


def evaluate(predictions: list[str], bertscore: bool = False, out: str | None = None, union: bool = False) -> dict:
    """Score JSON-lines predictions (fields: prediction, reference; optional sample_id, category).

    Args:
        predictions: one or more JSON-lines files, each scored on its own.
        bertscore: also compute BERTScore F1 (slow on CPU).
        out: write the scores as JSON to this file.
        union: score all files together as one set (e.g. one run's per-rank or per-category
            files); a sample id in two files must then be the same sample.

    Returns (and writes to ``out``) the scores of ``score_predictions`` plus ``input``
    (files, samples, identical repeats, blank lines) for one file or a union; for several
    files ``{"files": {path: scores, ...}}``.
    """
    from dep_lightning.callbacks.evaluation import metrics_table

    _distinct(predictions)
    blocks = [Predictions(list(predictions))] if union else [Predictions([path]) for path in predictions]
    for block in blocks:  # every file is read before any is scored: bad input stops the run early
        for path in block.paths:
            read_predictions(Path(path), block)
    results = {}
    for index, block in enumerate(blocks):
        scores = score_predictions(block.rows, bertscore=bertscore)
        scores["input"] = block.counts()
        print(("\n" if index else "") + block.summary())
        print(metrics_table(scores))
        results[" + ".join(block.paths)] = scores
    result = next(iter(results.values())) if len(blocks) == 1 else {"files": results}
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
