"""The autograd formula both fused backends register on their warp operators.

A forward operator ``op(input, theta_or_matrix, out_h, out_w, nearest, border,
align_corners, projective)`` gets the gradient from its backward operator
``backward(grad_out, input, theta_or_matrix, nearest, border, align_corners, projective,
need_input, need_theta) -> (grad_input, grad_theta)`` (empty tensors where not needed);
the backward operator's own formula refuses a second derivative.
"""

from __future__ import annotations

__all__ = ["register_warp_autograd"]


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
