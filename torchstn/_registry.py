"""A small name -> constructor registry, used for transform families and backends."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

__all__: list[str] = []

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        self._no_options: set[str] = set()  # names whose factory takes no required options

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        return list(self._entries)

    def factory(self, name: object) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{self.kind} must be one of {self.names()}, got {name!r}")
        return self._entries[name]

    def create(self, name: object, **options) -> T:
        factory = self.factory(name)
        if not options and name in self._no_options:  # a hot path: warp("affine") calls
            return factory()
        if name not in self._signatures:  # inspect.signature is slow for a hot path
            self._signatures[name] = inspect.signature(factory)
        try:
            self._signatures[name].bind(**options)
            if not options:
                self._no_options.add(name)
        except TypeError as e:
            raise TypeError(
                f"{self.kind} {name!r} does not take options {sorted(options)}: {e}"
            ) from None
        return factory(**options)
