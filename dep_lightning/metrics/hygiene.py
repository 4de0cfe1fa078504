"""Output hygiene: how much of an output was copied from the prompt, echoed or cut off.

Measured identically for every method (trained, prompting or copy baselines) and
reported next to the quality metrics, never used to drop outputs:

* ``longest_copy`` — the longest run of consecutive words of the output that appears
  verbatim (same words, same order) in one of the history review texts shown in the
  prompt. Words are whitespace-separated tokens compared exactly.
* ``copied`` — ``longest_copy >= n`` (``n = 8`` by default).
* ``echo`` — the output repeats the prompt's structure: a field label such as
  ``[Review Title]:`` / ``[User's Past Reviews]`` (also mangled ones like
  ``[OutputOutput Rating]:``) or a soft-prompt marker.
* ``hit_limit`` — generation stopped at ``max_new_tokens`` instead of an end-of-turn token
  (recorded at generation time; copy baselines never hit it).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

COPY_N = 8

_ECHO = re.compile(
    r"\[(?:Item Title|Item Description|Review Rating|Review Title|Review Text|Review Embedding|"
    r"Review Difference Embedding|User's Past Reviews|Output Review Rating|Output Review Title|"
    r"User Profile|Review \d+)\]|<(?:his|diff)_token_(?:start|end)>"
    # Mangled labels small models produce, e.g. "[OutputOutput Rating]:", "[Output Reviews Title]:".
    r"|\[[A-Za-z' ]{0,40}(?:Rating|Title|Description|Text|Embedding|Reviews?|Profile)\]\s*:",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    return text.split()


def longest_copied_run(output: str, sources: Iterable[str]) -> int:
    """Length in words of the longest run of ``output`` found verbatim in one source."""
    out = words(output)
    if not out:
        return 0
    best = 0
    for source in sources:
        positions: dict[str, list[int]] = {}
        for j, word in enumerate(words(source)):
            positions.setdefault(word, []).append(j)
        previous: dict[int, int] = {}  # source position -> run length ending there, for output word i-1
        for word in out:
            current = {}
            for j in positions.get(word, ()):
                length = previous.get(j - 1, 0) + 1
                current[j] = length
                if length > best:
                    best = length
            previous = current
    return best


def echoes_prompt(output: str) -> bool:
    return _ECHO.search(output) is not None


def annotate(row: dict[str, Any], n: int = COPY_N) -> dict[str, Any]:
    """Add ``longest_copy``, ``copied`` and ``echo`` to a prediction row (in place; returned)."""
    row["longest_copy"] = longest_copied_run(row["prediction"], row.get("history") or ())
    row["copied"] = row["longest_copy"] >= n
    row["echo"] = echoes_prompt(row["prediction"])
    return row


def summarize(rows: Sequence[dict[str, Any]], n: int = COPY_N) -> dict[str, Any]:
    """``metrics.json``'s ``hygiene`` block over annotated rows."""
    if not rows:
        return {"n": 0, "copy_n": n}
    count = len(rows)
    return {
        "n": count,
        "copy_n": n,
        "copy_rate": sum(bool(r["copied"]) for r in rows) / count,
        "mean_longest_copy": math.fsum(r["longest_copy"] for r in rows) / count,
        "limit_rate": sum(bool(r.get("hit_limit")) for r in rows) / count,
        "echo_rate": sum(bool(r["echo"]) for r in rows) / count,
    }
