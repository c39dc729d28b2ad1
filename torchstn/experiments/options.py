"""The small pieces every layer of the experiments shares: the config field helper
:func:`option` and the largest seed, :data:`SEED_MAX`."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["SEED_MAX", "option"]

SEED_MAX = 2**31 - 1


def option(default: Any, help: str, *, choices=None, minimum=None, maximum=None,
           above=None) -> Any:
    """A dataclass field with what the CLI and the checks need to know.

    Args:
        default: the default value (``None``: resolved from other fields).
        help: the flag's help text.
        choices: a callable returning the allowed values (read late, so registries that
            fill up on import are complete).
        minimum: smallest allowed value (inclusive).
        maximum: largest allowed value (inclusive).
        above: values must be greater than this.
    """
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
            "above": above}
    return field(default=default, metadata=meta)
