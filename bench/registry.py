"""Name -> object tables with errors that list the valid names.

Registries are filled explicitly (a literal mapping in each package's __init__), never by import
side effects, so a forgotten import cannot silently shrink the zoo or the metric list.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, Mapping, Optional, TypeVar

from bench.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, items: Mapping[str, T], resolve: Optional[Callable[[str], Optional[T]]] = None):
        self.kind = kind
        self._items = dict(items)
        self._resolve = resolve  # a name not registered yet (a plugin): found, checked and registered on first use

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        found = self._resolve(name) if self._resolve else None
        if found is not None:
            self._items[name] = found
            return found
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BenchError(f"unknown {self.kind} '{name}'{hint}; valid: {', '.join(sorted(self._items))}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def register(self, name: str, item: T) -> None:
        """Add an item after import (a plugin family, a metric a test defines); names stay unique."""
        if name in self._items:
            raise BenchError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def values(self) -> list[T]:
        """In registration order (the metric registry's order is the comparison table's column order)."""
        return list(self._items.values())

    def items(self):
        return [(n, self._items[n]) for n in self.names()]
