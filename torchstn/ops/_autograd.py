"""What both fused backends' warp operators share: their argument checks and the autograd
formula they register.

Both have one schema: a forward operator ``op(input, matrix, out_h, out_w, nearest,
border, align_corners, projective)`` (``matrix`` ``(N, 3, 3)``, checked by
:func:`check_warp_args`) gets the gradient from its backward operator
``backward(grad_out, input, matrix, nearest, border, align_corners, projective,
need_input, need_matrix) -> (grad_input, grad_matrix)`` (empty tensors where not needed);
the backward operator's own formula refuses a second derivative.
"""

from __future__ import annotations

import torch

__all__ = ["check_grad_out", "check_out_size", "check_warp_args", "register_warp_autograd"]


def check_out_size(op: str, out_h: int, out_w: int) -> None:
    if out_h < 1 or out_w < 1:
        raise ValueError(f"torchstn::{op}: out_h and out_w must be >= 1, got {out_h} and "
                         f"{out_w}")


def check_warp_args(op: str, input, matrix, dtypes) -> None:
    """The one schema of both fused operators: ``input`` ``(N, C, H, W)`` of one of
    ``dtypes``, ``matrix`` a floating ``(N, 3, 3)`` tensor on the same device."""
    if input.dim() != 4 or input.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"torchstn::{op}: input must be a (N, C, H, W) {names} tensor, got "
                         f"{tuple(input.shape)} {input.dtype}")
    if tuple(matrix.shape) != (input.shape[0], 3, 3) or matrix.dtype not in (
            torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"torchstn::{op}: matrix must be a floating (N, 3, 3) tensor with "
                         f"N = {input.shape[0]}, got {tuple(matrix.shape)} {matrix.dtype}")
    if matrix.device != input.device:
        raise ValueError(f"torchstn::{op}: matrix is on {matrix.device} but input is on "
                         f"{input.device}")


def check_grad_out(op: str, grad_out, input) -> None:
    if grad_out.dim() != 4 or grad_out.shape[:2] != input.shape[:2]:
        raise ValueError(f"torchstn::{op}: grad_out must be (N, C, out_h, out_w) with "
                         f"(N, C) = {tuple(input.shape[:2])} of input, got "
                         f"{tuple(grad_out.shape)}")


def register_warp_autograd(forward, backward, backward_op, backend: str) -> None:
    """Register the formulas on the custom ops ``forward`` and ``backward`` (their
    ``CustomOpDef`` objects); ``backward_op`` is the backward operator to call
    (``torch.ops.torchstn.<name>``), ``backend`` the name errors give."""

    def setup_context(ctx, inputs, output):
        input, theta, _, _, nearest, border, align, projective = inputs
        ctx.save_for_backward(input, theta)
        ctx.options = (nearest, border, align, projective)

    def gradient(ctx, grad_out):
        input, theta = ctx.saved_tensors
        need_input, need_theta = ctx.needs_input_grad[:2]
        gx, gt = backward_op(grad_out, input, theta, *ctx.options, need_input, need_theta)
        return ((gx if need_input else None), (gt if need_theta else None),
                None, None, None, None, None, None)

    def no_double_backward(ctx, grad_input, grad_theta):
        raise RuntimeError(f"backend {backend!r} does not support double backward "
                           f"(create_graph=True); use backend='torch' for higher-order "
                           "gradients")

    forward.register_autograd(gradient, setup_context=setup_context)
    backward.register_autograd(no_double_backward,
                               setup_context=lambda ctx, inputs, output: None)
