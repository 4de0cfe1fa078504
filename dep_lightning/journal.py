"""Append-only JSON-lines journals that survive a kill at any point.

A long loop that must not redo its finished work (generation writing predictions batch by
batch, likelihood scoring keeping each scored batch) appends one line per unit of work and
reads the file back when it is run again. A kill can interrupt only the last append, so:

* :func:`append_jsonl` writes a batch's lines in one write, then flushes and fsyncs them,
  so what it returned from is on disk;
* :func:`read_jsonl_prefix` reads the complete lines back: a last line without its newline
  is the torn end of an interrupted append and is left out; any other line that is not a
  JSON object means the file is damaged, not interrupted, and is an
  :class:`~dep_lightning.data.errors.InputError` naming the file and line (exit 2 from
  the CLI; deleting the file starts that work over);
* :func:`drop_torn_tail` cuts such a torn last line before the next append, which would
  otherwise run on from it and leave a damaged line in the middle of the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dep_lightning.data.errors import InputError

__all__ = ["SHARED_SCORES_ENV", "append_jsonl", "drop_torn_tail", "read_jsonl_prefix"]

#: A folder of score journals shared among runs (``scoring.ScoreWriter(shared=...)``'s default):
#: ``dep-lightning grid`` sets it to ``<root>/.backbone-scores`` for its points. Here, not in
#: ``scoring``, so that the grid reads it without importing torch and Lightning.
SHARED_SCORES_ENV = "DEP_LIGHTNING_SHARED_SCORES"


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows as JSON lines and make them durable (flush + fsync) before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl_prefix(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a file that may have been cut mid-append ([] when it is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for number, line in enumerate(lines[:-1], 1):  # lines[-1]: "" after the final newline, or the torn line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, number, None, line, "malformed JSON",
                             f"{error.msg}; the file is damaged: delete it to redo its work") from None
        if not isinstance(row, dict):
            raise InputError(path, number, None, row, "wrong type",
                             "expected a JSON object; the file is damaged: delete it to redo its work")
        rows.append(row)
    return rows


def drop_torn_tail(path: Path) -> None:
    """Cut a torn last line (no newline) so appended rows start on a line of their own."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
