"""The Triton warp as PyTorch operators, made with :func:`torch.library.triton_op`.

``torchstn::triton_warp(input, matrix, ...)``: its implementation is torch operations
plus Triton launches that torch.compile and torch.export can see into (Inductor schedules
the kernels itself). ``matrix`` is (N, 3, 3), any floating dtype; the kernels read it in
float32. The non-finite rule is written in torch operations without a branch: an image
whose matrix has a NaN or inf entry is warped as the identity, its output set to NaN and
its gradients zeroed. The autograd formula calls ``torchstn::triton_warp_backward``.

Imported by :func:`torchstn.ops.triton.backend.register_ops` on the first Triton warp
(``triton_op`` imports Triton).
"""

from __future__ import annotations

import torch

from ..._nonfinite import identity_where_nonfinite, nan_where
from .._autograd import check_grad_out, check_out_size, check_warp_args, register_warp_autograd
from .launch import fused_backward, fused_forward

__all__ = ["triton_warp", "triton_warp_backward"]


def _check_args(name: str, input: torch.Tensor, matrix: torch.Tensor) -> None:
    check_warp_args(name, input, matrix, (torch.float32, torch.float16, torch.bfloat16))


def _finite_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 matrices with non-finite ones replaced by the identity, finite mask (N,)).

    The mask is taken after the cast to float32: a float64 entry beyond float32's range
    is as non-finite as an inf."""
    m = matrix.to(torch.float32)
    m, finite = identity_where_nonfinite(m, torch.eye(3, dtype=m.dtype, device=m.device))
    return m.contiguous(), finite


@torch.library.triton_op("torchstn::triton_warp", mutates_args=())
def triton_warp(input: torch.Tensor, matrix: torch.Tensor, out_h: int, out_w: int,
                nearest: bool, border: bool, align_corners: bool,
                projective: bool) -> torch.Tensor:
    """The fused warp of ``input`` ``(N, C, H, W)`` by ``matrix`` ``(N, 3, 3)``:
    ``(N, C, out_h, out_w)``, dtype of ``input`` (channels-last where ``input`` is)."""
    _check_args("triton_warp", input, matrix)
    check_out_size("triton_warp", out_h, out_w)
    m, finite = _finite_rows(matrix)
    out = fused_forward(input, m, out_h, out_w, nearest, border, align_corners, projective)
    return nan_where(out, finite)


@torch.library.triton_op("torchstn::triton_warp_backward", mutates_args=())
def triton_warp_backward(grad_out: torch.Tensor, input: torch.Tensor, matrix: torch.Tensor,
                         nearest: bool, border: bool, align_corners: bool, projective: bool,
                         need_input: bool,
                         need_matrix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`triton_warp` for ``grad_out``: ``(grad_input, grad_matrix)``,
    like ``input`` (contiguous) and ``matrix``; an empty tensor for one not asked for."""
    _check_args("triton_warp_backward", input, matrix)
    check_grad_out("triton_warp_backward", grad_out, input)
    m, finite = _finite_rows(matrix)
    go = torch.where(finite.view(-1, 1, 1, 1), grad_out, torch.zeros_like(grad_out))
    gx, gm = input.new_empty(0), matrix.new_empty(0)
    if need_input or need_matrix:
        dx, dm = fused_backward(input, m, go, need_input, need_matrix, nearest, border,
                                align_corners, projective)
        if need_input:
            gx = dx
        if need_matrix:
            gm = dm.to(matrix.dtype)
    return gx, gm


register_warp_autograd(triton_warp, triton_warp_backward,
                       torch.ops.torchstn.triton_warp_backward, "triton")
