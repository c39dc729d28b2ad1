"""The reference decomposition of the fused warp operators.

Each fused operator (``torchstn::numba_warp``, ``torchstn::triton_warp``) computes what
the reference path computes: the family's sampling grid in plain tensor operations,
then ``grid_sample``. ONNX knows no fused warp, so every ONNX export writes this
composition (ONNX ``GridSample``):

- the standard ``torch.onnx.export`` (either exporter): :func:`torchstn.warp` takes the
  reference path while ``torch.onnx.is_in_onnx_export()`` (or TorchScript tracing) is
  on, so the traced program never holds a fused operator;
- :func:`torchstn.export.export_onnx` exports with ``torch.export`` (fused operators and
  all) and then decomposes each operator with these functions.

They are deliberately not registered in PyTorch's global decomposition table
(``torch._decomp``): Inductor then refuses its fallback to the fused kernel when the
``CI`` environment variable is set ("a decomposition exists, we should switch to it"),
and fake tensors with symbolic shapes would run the decomposition instead of the
operator's own fake kernel (other strides than the kernel's output).

The non-finite rule is part of the decomposition, as of the operators: an image whose
matrix has a NaN or inf entry is warped as the identity and its output set to NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._nonfinite import finite_rows, nan_where
from ..grids import _affine_grid, _projective_grid, compute_dtype

__all__ = ["reference_warp"]


def reference_warp(input: torch.Tensor, matrix: torch.Tensor, out_h: int, out_w: int,
                   nearest: bool, border: bool, align_corners: bool,
                   projective: bool) -> torch.Tensor:
    """The warp of ``input`` by ``matrix`` ``(N, 3, 3)`` on the reference path: the
    fused operators' arguments, their result."""
    finite = finite_rows(matrix)
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    m = torch.where(finite.view(-1, 1, 1), matrix, eye).to(compute_dtype(matrix.dtype))
    if projective:
        grid = _projective_grid(m, (out_h, out_w), align_corners)
    else:
        grid = _affine_grid(m[:, :2], (out_h, out_w), align_corners)
    out = F.grid_sample(input.to(grid.dtype), grid, mode="nearest" if nearest else "bilinear",
                        padding_mode="border" if border else "zeros",
                        align_corners=align_corners)
    return nan_where(out.to(input.dtype), finite)
