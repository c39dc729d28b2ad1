"""What both fused backends' warp operators share: their argument checks and the autograd
formula they register.

A forward operator ``op(input, theta_or_matrix, out_h, out_w, nearest, border,
align_corners, projective)`` gets the gradient from its backward operator
``backward(grad_out, input, theta_or_matrix, nearest, border, align_corners, projective,
need_input, need_theta) -> (grad_input, grad_theta)`` (empty tensors where not needed);
the backward operator's own formula refuses a second derivative.
"""

from __future__ import annotations

__all__ = ["check_grad_out", "check_out_size", "register_warp_autograd"]


def check_out_size(op: str, out_h: int, out_w: int) -> None:
    if out_h < 1 or out_w < 1:
        raise ValueError(f"torchstn::{op}: out_h and out_w must be >= 1, got {out_h} and "
                         f"{out_w}")


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
