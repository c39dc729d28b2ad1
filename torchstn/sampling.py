"""The differentiable sampler (paper, Sec. 3.3): read an input at a grid of locations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_batch, check_choice, check_float, check_tensor, shape_str
from .antialias import antialiased_sample

__all__ = ["MODES", "PADDING_MODES", "sample"]

MODES = ("nearest", "bilinear", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


def check_sampling_options(mode: str, padding_mode: str, ndim: int) -> None:
    """Validate ``mode`` / ``padding_mode`` for an input of ``ndim`` dimensions (4 or 5)."""
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    if mode == "bicubic" and ndim == 5:
        raise ValueError("mode 'bicubic' supports 4-D input (N, C, H, W) only, got 5-D input")


def check_input(input: torch.Tensor, ranks=(4, 5)) -> torch.Tensor:
    input = check_tensor("input", input)
    forms = {4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}
    if input.dim() not in ranks:
        raise ValueError(
            f"input must be {' or '.join(forms[r] for r in ranks)}, got shape "
            f"{shape_str(input.shape)}"
        )
    check_float("input", input)
    return input


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    antialias: bool = False,
) -> torch.Tensor:
    """Sample ``input`` at the normalised locations of ``grid``.

    Convention: ``grid[n, i, j] = (x, y)`` in normalised coordinates (-1 and +1 are the
    image's extreme edges when ``align_corners=False``, the extreme pixel centres when
    ``True``); ``output[n, :, i, j] = input[n, :, y, x]``, interpolated by ``mode``, with
    locations outside the image read by ``padding_mode``. Identical to
    :func:`torch.nn.functional.grid_sample`, which is the reference implementation.

    Args:
        input: ``(N, C, H, W)`` or ``(N, C, D, H, W)``, floating point.
        grid: ``(N, H_out, W_out, 2)`` or ``(N, D_out, H_out, W_out, 3)``, same dtype and
            device as ``input``.
        mode: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (4-D only).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: see the convention.
        antialias: average the input over each output pixel's footprint where the grid
            shrinks the image (4-D only; see :mod:`torchstn.antialias`). Where it does
            not shrink, the result is the plain sample.

    Returns:
        ``(N, C, H_out, W_out)`` or ``(N, C, D_out, H_out, W_out)``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> sample(x, torch.tensor([[[[0.0, 0.0]]]]))
        tensor([[[[1.5000]]]])
    """
    input = check_input(input)
    grid = check_tensor("grid", grid)
    d = input.dim() - 2
    form = "(N, H_out, W_out, 2)" if d == 2 else "(N, D_out, H_out, W_out, 3)"
    if grid.dim() != d + 2 or grid.shape[-1] != d:
        raise ValueError(
            f"grid must have shape {form} for a {d + 2}-D input, got {shape_str(grid.shape)}"
        )
    check_batch("grid", grid, input.shape[0], "input")
    if grid.dtype != input.dtype:
        raise TypeError(f"grid dtype {grid.dtype} must match input dtype {input.dtype}")
    if grid.device != input.device:
        raise ValueError(f"grid is on {grid.device} but input is on {input.device}")
    check_sampling_options(mode, padding_mode, input.dim())
    if antialias:
        if d != 2:
            raise ValueError("antialias supports 4-D input (N, C, H, W) only, got 5-D input")
        return antialiased_sample(input, grid, mode, padding_mode, bool(align_corners))
    return F.grid_sample(
        input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
    )
