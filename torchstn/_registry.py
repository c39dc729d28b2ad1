"""One small registry type for every registry of torchstn.

A :class:`Registry` maps names to entries in a fixed order: transform families (classes),
warp backends (instances), and in :mod:`torchstn.experiments` models, distortions, tasks,
optimizers and schedules (factories). Every name is written out literally where it is
registered, so ``grep`` finds it; the tests parametrize over the registries.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries, in registration order.

    Args:
        kind: what the entries are, for messages (``"model"``: ``model must be one of
            [...], got 'vgg'``).

    Example:
        >>> colours = Registry("colour")
        >>> _ = colours.add("red", 0xFF0000)
        >>> @colours.register("green")
        ... def green():
        ...     return 0x00FF00
        >>> colours.names(), "red" in colours, colours.create("green")
        (['red', 'green'], True, 65280)
        >>> colours.get("blue")
        Traceback (most recent call last):
        ...
        ValueError: colour must be one of ['red', 'green'], got 'blue'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        self._no_options: set[str] = set()  # names whose factory takes no required options

    def add(self, name: str, entry: T, *, before: str | None = None) -> T:
        """Register ``entry`` as ``name``, at the end or just ahead of ``before``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if before is None:
            self._entries[name] = entry
        else:
            self.get(before)  # a clear error for an unknown anchor
            items = list(self._entries.items())
            at = [n for n, _ in items].index(before)
            items.insert(at, (name, entry))
            self._entries = dict(items)
        return entry

    def register(self, name: str, *, before: str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def add(entry: T) -> T:
            return self.add(name, entry, before=before)

        return add

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    def check(self, name: object, argument: str | None = None) -> str:
        """``name`` if it is registered, else an error naming ``argument`` (default: kind)."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{argument or self.kind} must be one of {self.names()}, "
                             f"got {name!r}")
        return name

    def get(self, name: object) -> T:
        """The entry registered as ``name``."""
        return self._entries[self.check(name)]

    def create(self, name: object, **options: Any) -> Any:
        """Call the entry registered as ``name`` (a class or factory) with ``options``.

        Options the factory does not take raise a ``TypeError`` that names them.
        """
        factory = self.get(name)
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
