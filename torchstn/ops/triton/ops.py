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

from .backend import fused_backward, fused_forward

__all__ = ["triton_warp", "triton_warp_backward"]


def _finite_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 matrices with non-finite ones replaced by the identity, finite mask (N,))."""
    finite = torch.isfinite(matrix).flatten(1).all(1)
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    clean = torch.where(finite.view(-1, 1, 1), matrix, eye)
    return clean.to(torch.float32).contiguous(), finite


@torch.library.triton_op("torchstn::triton_warp", mutates_args=())
def triton_warp(input: torch.Tensor, matrix: torch.Tensor, out_h: int, out_w: int,
                nearest: bool, border: bool, align_corners: bool,
                projective: bool) -> torch.Tensor:
    """The fused warp of ``input`` ``(N, C, H, W)`` by ``matrix`` ``(N, 3, 3)``:
    ``(N, C, out_h, out_w)``, dtype of ``input`` (channels-last where ``input`` is)."""
    m, finite = _finite_rows(matrix)
    out = fused_forward(input, m, out_h, out_w, nearest, border, align_corners, projective)
    return torch.where(finite.view(-1, 1, 1, 1), out, torch.full_like(out, float("nan")))


@torch.library.triton_op("torchstn::triton_warp_backward", mutates_args=())
def triton_warp_backward(grad_out: torch.Tensor, input: torch.Tensor, matrix: torch.Tensor,
                         nearest: bool, border: bool, align_corners: bool, projective: bool,
                         need_input: bool,
                         need_matrix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`triton_warp` for ``grad_out``: ``(grad_input, grad_matrix)``,
    like ``input`` (contiguous) and ``matrix``; an empty tensor for one not asked for."""
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


def _setup_context(ctx, inputs, output):
    input, matrix, _, _, nearest, border, align, projective = inputs
    ctx.save_for_backward(input, matrix)
    ctx.options = (nearest, border, align, projective)


def _backward(ctx, grad_out):
    input, matrix = ctx.saved_tensors
    need_input, need_matrix = ctx.needs_input_grad[:2]
    gx, gm = torch.ops.torchstn.triton_warp_backward(grad_out, input, matrix, *ctx.options,
                                                    need_input, need_matrix)
    return ((gx if need_input else None), (gm if need_matrix else None),
            None, None, None, None, None, None)


triton_warp.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, grad_input, grad_matrix):
    raise RuntimeError("backend 'triton' does not support double backward (create_graph=True); "
                       "use backend='torch' for higher-order gradients")


triton_warp_backward.register_autograd(_no_double_backward,
                                       setup_context=lambda ctx, inputs, output: None)
