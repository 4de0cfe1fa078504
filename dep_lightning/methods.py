"""The registry of methods: what the results need to know about each method, declared with its class.

A method is the ``method`` of a run's ``manifest.json``. Each one is declared once, by the
:func:`register` decorator on the class that implements it::

    @register(MethodSpec("dep", "DEP", order=70))
    class DEPModule(GenerativeModule):
        ...

The spec holds the name, the row label of the tables, the kind of row it gets in table 1
(a ranked ``method`` row, or a ``reference`` row that is shown and never ranked, as the
copy baselines) and its place among the rows of that kind. The tables
(``results/tables.py``: ``METHODS``, ``REFERENCE_METHODS``, ``METHOD_LABELS``) derive
from it, so adding a method touches no table code.

A class with one spec runs that method and gets it as its ``method`` attribute. A class
may serve several (``PromptingModule``: ``non_perso`` and ``rag``; ``CopyBaseline``: one
per mode); its instances then set ``method`` from their arguments.

The declarations run when their modules are imported, so :func:`registered` imports
``dep_lightning.models`` before answering: reading the registry costs the import of the
model classes (torch) once per process. This module itself imports nothing heavy, so
model modules can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal, TypeVar

TableRow = Literal["method", "reference"]
ROWS: tuple[TableRow, ...] = ("method", "reference")  # table 1 shows the method rows first

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class MethodSpec:
    """One method, as the results see it.

    Args:
        name: the ``method`` of its runs' ``manifest.json``.
        label: its row label in the tables.
        row: ``method`` (a ranked row of table 1) or ``reference`` (shown, never ranked).
        order: its place among the rows of its kind, ascending (ties by name).
    """

    name: str
    label: str
    row: TableRow = "method"
    order: int = 0

    def __post_init__(self) -> None:
        if self.row not in ROWS:
            raise ValueError(f"method {self.name!r}: row must be one of {ROWS}, got {self.row!r}")


class MethodRegistry:
    """Method specs by name, each with the class that declared it."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._declared_by: dict[str, str] = {}

    def add(self, spec: MethodSpec, declared_by: str) -> None:
        """Register ``spec``; a name is declared once (the same declaration again is a no-op,
        as when its module is imported anew)."""
        known = self._specs.get(spec.name)
        if known is not None and (known, self._declared_by[spec.name]) != (spec, declared_by):
            raise ValueError(f"method {spec.name!r} is already registered by {self._declared_by[spec.name]} "
                             f"({known}); {declared_by} declares {spec}")
        self._specs[spec.name] = spec
        self._declared_by[spec.name] = declared_by

    def get(self, name: str) -> MethodSpec | None:
        return self._specs.get(name)

    def declared_by(self, name: str) -> str:
        """The qualified name of the class that declared ``name``."""
        return self._declared_by[name]

    def __iter__(self) -> Iterator[MethodSpec]:
        """Every spec in table 1's order: method rows, then reference rows, each by ``order``."""
        return iter(sorted(self._specs.values(), key=lambda s: (ROWS.index(s.row), s.order, s.name)))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self, row: TableRow) -> tuple[str, ...]:
        """The names of one kind of row, in order."""
        return tuple(spec.name for spec in self if spec.row == row)

    def labels(self) -> dict[str, str]:
        return {spec.name: spec.label for spec in self}

    def copy(self) -> MethodRegistry:
        other = MethodRegistry()
        other._specs, other._declared_by = dict(self._specs), dict(self._declared_by)
        return other


#: The process's registry; :func:`register` adds to it and :func:`registered` reads it.
REGISTRY = MethodRegistry()


def register(*specs: MethodSpec) -> Callable[[T], T]:
    """Class decorator: the class implements the methods ``specs``.

    With one spec, the class's ``method`` is set to its name (a class body that sets
    another ``method`` is an error: the spec is the one place the name is written)."""
    if not specs:
        raise ValueError("register needs at least one MethodSpec")

    def declare(cls: T) -> T:
        declared_by = f"{cls.__module__}.{cls.__qualname__}"
        if len(specs) == 1:
            own = cls.__dict__.get("method")
            if own is not None and own != specs[0].name:
                raise ValueError(f"{declared_by} sets method = {own!r} but registers {specs[0].name!r}")
            cls.method = specs[0].name
        for spec in specs:
            REGISTRY.add(spec, declared_by)
        return cls

    return declare


def registered() -> MethodRegistry:
    """The registry, with every method of ``dep_lightning.models`` declared."""
    import dep_lightning.models  # noqa: F401 (importing the classes runs their declarations)

    return REGISTRY
