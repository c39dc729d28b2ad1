"""Shared input validation for the public boundary.

Every public function validates its arguments once, here, with messages that name the
argument, what was expected and what arrived. Inner functions trust their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__: list[str] = []

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def shape_str(shape: Sequence[int]) -> str:
    """Format a shape as ``(8, 3, 3)`` for messages."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float(name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {value.dtype}"
        )


def check_shape(name: str, value: torch.Tensor, expected: Sequence[int | None], what: str) -> None:
    """Check ``value.shape`` against ``expected``; ``None`` entries match any size.

    ``what`` spells the expectation for the message, e.g. ``"(N, 2, 3)"``.
    """
    ok = value.dim() == len(expected) and all(
        e is None or int(s) == e for s, e in zip(value.shape, expected)
    )
    if not ok:
        raise ValueError(f"{name} must have shape {what}, got {shape_str(value.shape)}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_size(name: str, size: object, ranks: Sequence[int]) -> tuple[int, ...]:
    """Check a full tensor size ``(N, C, H, W)`` or ``(N, C, D, H, W)``."""
    if isinstance(size, torch.Size):
        size = tuple(size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) not in ranks
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
        or size[0] < 0
        or not all(s >= 1 for s in size[1:])
    ):
        forms = " or ".join({4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}[r] for r in ranks)
        raise ValueError(
            f"{name} must be a sequence of ints {forms}, N >= 0 and the others >= 1, "
            f"got {size!r}"
        )
    return tuple(size)


def check_spatial_size(name: str, size: object, length: int) -> tuple[int, ...]:
    """Check an output spatial size: ``(H, W)`` for 2-D, ``(D, H, W)`` for 3-D."""
    if isinstance(size, torch.Size):
        size = tuple(size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != length
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        form = "(H, W)" if length == 2 else "(D, H, W)"
        raise ValueError(f"{name} must be {length} positive ints {form}, got {size!r}")
    return tuple(size)


def check_batch(name: str, value: torch.Tensor, batch: int, other: str) -> None:
    if value.shape[0] != batch:
        raise ValueError(
            f"{name} has batch size {value.shape[0]} but {other} has batch size {batch}"
        )
