"""Bad-input reporting: every rejected record names its file, line, field and value.

Readers never drop a record silently. Under ``on_error="raise"`` (the default) the first
bad record stops the run with an :class:`InputError`; under ``on_error="skip"`` it is
skipped and counted in an :class:`ErrorLog`, whose report is printed at the end.
Lines that are passed over without being bad input (blank lines, an optional field left
at its default) are counted too, as notes, so every line of a file is accounted for.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

OnError = Literal["raise", "skip"]

_MAX_VALUE_CHARS = 80


def show_value(value: object) -> str:
    """A short printable form of a bad value (long texts are cut, bytes are escaped)."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


class InputError(ValueError):
    """A record that cannot be used, located precisely.

    ``kind`` is a short stable category ("malformed JSON", "missing field", ...) used to
    count skipped records; the message names file, line, field and value.
    """

    def __init__(self, path: str, line: int | None, field: str | None, value: object, kind: str, detail: str = ""):
        self.path = str(path)
        self.line = line
        self.field = field
        self.value = value
        self.kind = kind
        self.detail = detail
        where = self.path if line is None else f"{self.path}:{line}"
        parts = [f"{where}: {kind}"]
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(f"value {show_value(value)}")
        message = ", ".join(parts)
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class ConfigError(ValueError):
    """A configuration value that cannot work, found before any data is read.

    Reported like bad input (one line, exit 2); ``field`` is the option's name.
    """

    def __init__(self, field: str, value: object, detail: str):
        self.field, self.value, self.detail = field, value, detail
        super().__init__(f"configuration: field {field!r}, value {show_value(value)} ({detail})")


def required_field(doc: Mapping, key: str, where: str, prefix: str = "") -> Any:
    """``doc[key]``, or an :class:`InputError` naming ``where`` and the field (``prefix + key``)."""
    if key not in doc:
        raise InputError(where, None, prefix + key, None, "missing field")
    return doc[key]


def json_object(value: Any, where: str, name: str) -> dict:
    """``value`` if it is a JSON object, else an :class:`InputError` naming the field and its type."""
    if not isinstance(value, dict):
        raise InputError(where, None, name, value, "wrong type", f"expected an object, got {type(value).__name__}")
    return value


def json_error(path: str, text: str, exc: json.JSONDecodeError) -> InputError:
    """The error for a whole-file JSON document that does not parse, at the line it breaks on.

    A file truncated at its end breaks *after* its last line (``exc.lineno`` is one past
    the lines there are): that is reported as the end of the file, not looked up.
    """
    lines = text.splitlines()
    if 0 < exc.lineno <= len(lines):
        return InputError(path, exc.lineno, None, lines[exc.lineno - 1], "malformed JSON", exc.msg)
    return InputError(path, exc.lineno, None, "end of file", "malformed JSON",
                      f"{exc.msg}; the file ends early (truncated?)")


@dataclass
class ErrorLog:
    """Collects skipped records by kind; raises instead when ``on_error == "raise"``."""

    on_error: OnError = "raise"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)
    note_examples: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def handle(self, error: InputError) -> None:
        if self.on_error == "raise":
            raise error
        self.counts[error.kind] += 1
        self.examples.setdefault(error.kind, str(error))

    def note(self, kind: str, where: str) -> None:
        """Count a line passed over that is not bad input (never raises): nothing goes uncounted."""
        self.notes[kind] += 1
        self.note_examples.setdefault(kind, where)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def report(self) -> str:
        lines = [f"bad input: {self.skipped} record(s) skipped (on_error=skip)" if self.counts else "bad input: none"]
        for kind, n in self.counts.most_common():
            lines.append(f"  {n:>8}  {kind}  e.g. {self.examples[kind]}")
        if self.notes:
            lines.append(f"passed over (not errors): {sum(self.notes.values())} line(s)")
            for kind, n in self.notes.most_common():
                lines.append(f"  {n:>8}  {kind}  e.g. {self.note_examples[kind]}")
        return "\n".join(lines)
