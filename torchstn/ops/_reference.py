"""The reference decomposition of the fused warp operators, registered with PyTorch.

Each fused operator (``torchstn::numba_warp``, ``torchstn::triton_warp``) computes what
the reference path computes: the family's sampling grid in plain tensor operations,
then ``grid_sample``. That composition is registered once, when the operator is defined,
as the operator's decomposition in PyTorch's table (``torch._decomp``), the way PyTorch
decomposes its own composite operators. The standard ``torch.onnx.export(...,
dynamo=True)`` consults that table for every operator ONNX has no translation of, so a
model holding torchstn modules exports with the plain call: each fused warp becomes the
grid's operations and ONNX ``GridSample``. ``torch.compile`` is unaffected (Inductor
decomposes only the operators of its own list and keeps calling the fused kernels).

The non-finite rule is part of the decomposition, as of the operators: an image whose
matrix has a NaN or inf entry is warped as the identity and its output set to NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._nonfinite import finite_rows, nan_where
from ..grids import _affine_grid, _projective_grid, compute_dtype

__all__ = ["reference_warp", "reference_warp_theta", "register_reference"]


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


def reference_warp_theta(input: torch.Tensor, theta: torch.Tensor, out_h: int, out_w: int,
                         nearest: bool, border: bool, align_corners: bool,
                         projective: bool) -> torch.Tensor:
    """:func:`reference_warp` for ``theta`` ``(N, E)``: the first ``E`` row-major entries
    of each matrix, the rest the identity's (``torchstn::numba_warp``'s argument)."""
    n, e = theta.shape
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device).reshape(1, 9)
    matrix = torch.cat([theta, eye[:, e:].expand(n, 9 - e)], dim=1).view(n, 3, 3)
    return reference_warp(input, matrix, out_h, out_w, nearest, border, align_corners,
                          projective)


def register_reference(op: torch._ops.OpOverload, fn) -> None:
    """Register ``fn`` as the decomposition of operator ``op`` in PyTorch's table (once)."""
    from torch._decomp import decomposition_table, register_decomposition

    if op not in decomposition_table:
        register_decomposition(op)(fn)
