"""A name → object registry that refuses duplicates (fast-reid style) and explains unknown names."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import OccreidError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Holds named entries of one kind (datasets, models, methods, stages).

    ``@registry.register("name")`` adds an entry; registering a name twice is a programming error
    (``KeyError``), so two modules can never silently shadow each other. ``registry.get(name)`` raises an
    :class:`OccreidError` that lists the valid names.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise OccreidError(
                f"unknown {self.kind} '{name}'",
                fix=did_you_mean(name, self._entries),
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
