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

__all__ = ["triton_warp", "triton_warp_antialias", "triton_warp_antialias_backward",
           "triton_warp_backward"]


def _check_args(name: str, input: torch.Tensor, matrix: torch.Tensor) -> None:
    check_warp_args(name, input, matrix, (torch.float32, torch.float16, torch.bfloat16))


def _finite_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 matrices with non-finite ones replaced by the identity, finite mask (N,)).

    The mask is taken after the cast to float32: a float64 entry beyond float32's range
    is as non-finite as an inf."""
    m = matrix.to(torch.float32)
    m, finite = identity_where_nonfinite(m, torch.eye(3, dtype=m.dtype, device=m.device))
    return m.contiguous(), finite


def _define_ops(name: str, antialias: bool):
    """Define ``torchstn::<name>`` and ``torchstn::<name>_backward`` on the kernels
    (plain, or anti-aliased: ``antialias``) with their autograd formula; return both."""

    def check_mode(nearest: bool) -> None:
        if antialias and nearest:
            raise ValueError(f"torchstn::{name}: nearest must be False (the anti-aliased "
                             "kernels sample bilinearly)")

    @torch.library.triton_op(f"torchstn::{name}", mutates_args=())
    def forward(input: torch.Tensor, matrix: torch.Tensor, out_h: int, out_w: int,
                nearest: bool, border: bool, align_corners: bool,
                projective: bool) -> torch.Tensor:
        _check_args(name, input, matrix)
        check_out_size(name, out_h, out_w)
        check_mode(nearest)
        m, finite = _finite_rows(matrix)
        out = fused_forward(input, m, out_h, out_w, nearest, border, align_corners, projective,
                            antialias)
        return nan_where(out, finite)

    @torch.library.triton_op(f"torchstn::{name}_backward", mutates_args=())
    def backward(grad_out: torch.Tensor, input: torch.Tensor, matrix: torch.Tensor,
                 nearest: bool, border: bool, align_corners: bool, projective: bool,
                 need_input: bool, need_matrix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        _check_args(f"{name}_backward", input, matrix)
        check_grad_out(f"{name}_backward", grad_out, input)
        check_mode(nearest)
        m, finite = _finite_rows(matrix)
        go = torch.where(finite.view(-1, 1, 1, 1), grad_out, torch.zeros_like(grad_out))
        gx, gm = input.new_empty(0), matrix.new_empty(0)
        if need_input or need_matrix:
            dx, dm = fused_backward(input, m, go, need_input, need_matrix, nearest, border,
                                    align_corners, projective, antialias)
            if need_input:
                gx = dx
            if need_matrix:
                gm = dm.to(matrix.dtype)
        return gx, gm

    register_warp_autograd(forward, backward,
                           getattr(torch.ops.torchstn, f"{name}_backward"), "triton")
    return forward, backward


#: The fused warp of ``input`` ``(N, C, H, W)`` by ``matrix`` ``(N, 3, 3)``:
#: ``(N, C, out_h, out_w)``, dtype of ``input`` (channels-last where ``input`` is). Its
#: backward operator returns ``(grad_input, grad_matrix)``, like ``input`` (contiguous)
#: and ``matrix``, an empty tensor for a gradient not asked for.
triton_warp, triton_warp_backward = _define_ops("triton_warp", antialias=False)
#: The same, anti-aliased (:mod:`.antialias`; ``nearest`` must be False).
triton_warp_antialias, triton_warp_antialias_backward = _define_ops("triton_warp_antialias",
                                                                    antialias=True)
