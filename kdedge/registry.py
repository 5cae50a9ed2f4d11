"""One small generic registry: models, losses and datasets register by name.

A variant is one decorated function; nothing else has to be edited to add it. Export formats and
bench runtimes are not functions but rows that carry their behaviour: each is a table keyed by name
beside its code (kdedge/export/formats.py, kdedge/bench/runtimes.py).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from kdedge.errors import KdedgeError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(fn: T) -> T:
            key = name or fn.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KdedgeError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
