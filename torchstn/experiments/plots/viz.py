"""Figures (matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._files import atomic_write

__all__ = ["draw_grid", "save_figure", "pyplot"]


def pyplot():
    """Import matplotlib with a file-only backend, or fail with an install hint."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "figures need matplotlib: pip install matplotlib"
        ) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid_to_pixels(grid: torch.Tensor, in_hw, *, align_corners: bool) -> torch.Tensor:
    """Normalised grid ``(H, W, 2)`` -> input pixel coordinates ``(H, W, 2)`` (column, row)."""
    size = torch.tensor([in_hw[1], in_hw[0]], dtype=grid.dtype)
    if align_corners:
        return (grid + 1) / 2 * (size - 1)
    return ((grid + 1) * size - 1) / 2


def draw_grid(ax, grid: torch.Tensor, in_hw, *, align_corners: bool = False, lines: int = 8,
              color: str = "#ffb000") -> None:
    """Draw the sampling grid ``(H, W, 2)`` over an input image of size ``in_hw`` on ``ax``.

    About ``lines`` rows and columns of the grid are drawn, plus its outline, so the
    picture shows which part of the input the output reads.
    """
    px = grid_to_pixels(grid.detach().float().cpu(), in_hw, align_corners=align_corners).numpy()
    h, w = px.shape[:2]
    rows = sorted({*range(0, h, max(1, h // lines)), h - 1})
    cols = sorted({*range(0, w, max(1, w // lines)), w - 1})
    for i in rows:
        ax.plot(px[i, :, 0], px[i, :, 1], color=color, lw=0.6, alpha=0.9)
    for j in cols:
        ax.plot(px[:, j, 0], px[:, j, 1], color=color, lw=0.6, alpha=0.9)
    ax.set_xlim(-0.5, in_hw[1] - 0.5)
    ax.set_ylim(in_hw[0] - 0.5, -0.5)


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save ``fig`` atomically: a temporary file in the same folder, then a rename."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **kwargs))
