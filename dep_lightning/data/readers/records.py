"""Streaming JSON-lines access and field validation shared by every reader.

Files are read one line at a time (gzip transparently), so a multi-GB dump is never
held in memory. Each line is decoded strictly as UTF-8 so undecodable bytes are
reported with their line number instead of being replaced silently.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.schema import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS


def open_binary(path: str | Path):
    path = Path(path)
    if path.is_dir():
        raise InputError(str(path), None, None, str(path), "is a directory", "expected a file of JSON lines")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def numbered_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw bytes)`` of a plain or gzipped file, streamed.

    A damaged gzip stream is a file-level :class:`InputError` naming the file and the line
    it broke in, whatever ``on_error`` says: the lines before it were read, but the file's
    count is wrong, and a partly read file must not pass for a whole one.
    """
    number = 0
    with open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                yield number, raw
        except EOFError as exc:
            raise InputError(str(path), number + 1, None, f"{number} whole line(s) read", "truncated gzip file",
                             f"{exc}; the download or copy was cut short") from None
        except gzip.BadGzipFile as exc:
            kind, hint = (("not a gzip file", "named .gz but not gzip-compressed; rename it without .gz")
                          if number == 0 else ("corrupt gzip file", "damaged after the lines read"))
            raise InputError(str(path), number + 1, None, f"{number} whole line(s) read", kind,
                             f"{exc}; {hint}") from None
        except zlib.error as exc:
            raise InputError(str(path), number + 1, None, f"{number} whole line(s) read", "corrupt gzip file",
                             str(exc)) from None


def iter_json_lines(path: str | Path, errors: ErrorLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad lines go to ``errors``,
    blank ones to its notes."""
    with tqdm(desc=Path(path).name, unit=" lines", mininterval=1.0, disable=None, leave=False) as progress:
        for number, raw in numbered_lines(path):
            progress.update()
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.handle(InputError(str(path), number, None, raw[max(0, exc.start - 20) : exc.end + 20],
                                         "undecodable bytes", f"not UTF-8 at byte {exc.start}"))
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write first
            if not line.strip():
                errors.note("blank or whitespace-only line", f"{path}:{number}")  # no record, but counted
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.handle(InputError(str(path), number, None, line.strip(), "malformed JSON", exc.msg))
                continue
            except RecursionError:  # json's parser recurses per nesting level
                errors.handle(InputError(str(path), number, None, line.strip(), "malformed JSON",
                                         "nested too deeply"))
                continue
            if not isinstance(obj, dict):
                errors.handle(InputError(str(path), number, None, obj, "malformed JSON", "expected an object"))
                continue
            yield number, obj


def no_records(path: str | Path, skipped: Counter, what: str) -> InputError:
    """The error for a file that yielded nothing: an empty dataset is never a success.

    ``skipped`` counts this file's records skipped as bad input (``on_error="skip"``), by
    kind. A file-level error, raised whatever ``on_error`` says.
    """
    if skipped:
        kinds = ", ".join(f"{kind} {n}" for kind, n in skipped.most_common())
        return InputError(str(path), None, None, f"{skipped.total()} record(s) skipped", f"no usable {what}",
                          f"every record was bad input: {kinds}")
    return InputError(str(path), None, None, "no records", "empty file", f"expected JSON lines of {what}s")


class Fields:
    """Typed access to one record's fields; failures raise :class:`InputError` naming the location.

    ``prefix`` names nested records (``profile[3].``) so the error points at the exact field.
    """

    def __init__(self, record: Mapping[str, Any], path: str, line: int | None, prefix: str = ""):
        self.record, self.path, self.line, self.prefix = record, str(path), line, prefix

    def error(self, field: str, value: object, kind: str, detail: str = "") -> InputError:
        return InputError(self.path, self.line, self.prefix + field, value, kind, detail)

    def raw(self, field: str) -> Any:
        if field not in self.record or self.record[field] is None:
            raise self.error(field, None, "missing field")
        return self.record[field]

    def string(self, field: str, *, allow_empty: bool = True, default: str | None = None) -> str:
        if default is not None and self.record.get(field) is None:
            return default
        value = self.raw(field)
        if not isinstance(value, str):
            raise self.error(field, value, "wrong type", f"expected a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise self.error(field, value, "empty text")
        return value

    def number(self, field: str, *, low: float | None = None, high: float | None = None) -> float:
        value = self.raw(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(field, value, "wrong type", f"expected a number, got {type(value).__name__}")
        finite = isinstance(value, int) or math.isfinite(value)  # isfinite overflows on ints beyond float range
        if not finite or (low is not None and value < low) or (high is not None and value > high):
            raise self.error(field, value, "value out of range", f"expected a finite number in [{low}, {high}]")
        return float(value)

    def integer(self, field: str, *, low: int | None = None, high: int | None = None, hint: str = "") -> int:
        """An integer (an integral float such as ``1.6e12`` counts) in ``[low, high]``.

        ``hint`` is added to the out-of-range message (e.g. the unit the field must use).
        """
        value = self.raw(field)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, value, "wrong type", f"expected an integer, got {type(value).__name__}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"expected an integer in [{low}, {high}]" if high is not None else f"expected >= {low}"
            raise self.error(field, value, "value out of range", bounds + (f"; {hint}" if hint else ""))
        return value

    def timestamp(self, field: str, unit: str) -> int:
        """A review time in ``unit`` (``"s"`` or ``"ms"``) as milliseconds since the epoch.

        Accepted: :data:`~dep_lightning.data.schema.MIN_TIMESTAMP_MS` (1973-03-03) up to
        :data:`~dep_lightning.data.schema.MAX_TIMESTAMP_MS` (3000-01-01). Both bounds catch
        seconds/milliseconds mix-ups: a millisecond value in a seconds field lands tens of
        thousands of years ahead, a seconds value in a millisecond field in January 1970.
        The upper bound also keeps integers inside int64 columns.
        """
        if unit == "s":
            low, high = MIN_TIMESTAMP_MS // 1000, MAX_TIMESTAMP_MS // 1000
            hint = "seconds since 1970 expected (1973-03-03 .. 3000-01-01); a larger value is likely milliseconds"
            return self.integer(field, low=low, high=high, hint=hint) * 1000
        hint = "milliseconds since 1970 expected (1973-03-03 .. 3000-01-01); a smaller value is likely seconds"
        return self.integer(field, low=MIN_TIMESTAMP_MS, high=MAX_TIMESTAMP_MS, hint=hint)

    def text_or_list(self, field: str, *, default: str | None = None) -> str:
        """Amazon descriptions come as a string or a list of paragraphs; join lists with spaces."""
        if default is not None and self.record.get(field) is None:
            return default
        value = self.raw(field)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return " ".join(part.strip() for part in value if part.strip())
        raise self.error(field, value, "wrong type", "expected a string or a list of strings")

    def nested(self, field: str) -> "Fields":
        value = self.raw(field)
        if not isinstance(value, Mapping):
            raise self.error(field, value, "wrong type", f"expected an object, got {type(value).__name__}")
        return Fields(value, self.path, self.line, f"{self.prefix}{field}.")

    def records(self, field: str) -> list["Fields"]:
        value = self.raw(field)
        if not isinstance(value, list):
            raise self.error(field, value, "wrong type", f"expected a list, got {type(value).__name__}")
        out = []
        for index, entry in enumerate(value):
            if not isinstance(entry, Mapping):
                raise self.error(f"{field}[{index}]", entry, "wrong type", "expected an object")
            out.append(Fields(entry, self.path, self.line, f"{self.prefix}{field}[{index}]."))
        return out
