"""The entry points of the Triton kernels: plain functions of tensors that allocate the
outputs and launch the kernels (:func:`fused_forward`, :func:`fused_backward`), and how a
launch is made traceable. Imports no Triton: the kernels load on first use (``_load``).
Used by the operators (:mod:`.ops`) and re-exported by :mod:`.backend`."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["fused_backward", "fused_forward", "interpreting"]

_kernels = None
_EPS16 = 16 * torch.finfo(torch.float32).eps


def _load():
    global _kernels
    if _kernels is None:
        from . import kernels

        _kernels = kernels
    return _kernels


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _on(device: torch.device):
    """Launch on ``device``: Triton launches on the current CUDA device otherwise."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _fixed_point_scale(grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image power-of-two scale 2^s with sum(|grad_out[n]|) * 2^s <= 2^62.

    Every input-gradient value is a weighted sum (weights in [0, 1]) of a subset of one
    image's output gradients, so no fixed-point sum can exceed 2^62 in magnitude.
    """
    total = grad_out.double().abs().flatten(1).sum(1)  # float64: a float32 sum may overflow
    exponent = torch.floor(62.0 - torch.log2(total.clamp_min(1e-30))).clamp(-100.0, 100.0)
    return torch.exp2(exponent).float().contiguous(), torch.isfinite(total)


class _Skip:
    """A launcher that runs nothing: tracing with fake tensors under the interpreter,
    where the output's shape is all that is computed."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _launcher(kernel, probe: torch.Tensor):
    """``kernel`` as a traceable launch (``torch.library.wrap_triton``), so that
    torch.compile and torch.export see into it. Triton's interpreter has no traceable
    form: it launches eagerly on real tensors and skips fake ones (shape inference)."""
    if interpreting():
        from torch._subclasses.fake_tensor import is_fake

        return _Skip() if is_fake(probe) else kernel
    return torch.library.wrap_triton(kernel)


def fused_forward(x: torch.Tensor, m: torch.Tensor, out_h: int, out_w: int, nearest: bool,
                  border: bool, align: bool, projective: bool,
                  antialias: bool = False) -> torch.Tensor:
    """The warp of ``x`` by the matrices ``m``: ``(N, C, out_h, out_w)``, dtype of ``x``.

    x: ``(N, C, H, W)`` float32/float16/bfloat16 on a CUDA device (or the CPU under the
    interpreter), any strides; m: contiguous ``(N, 3, 3)`` float32 on the same device,
    each mapping normalised output points to input points. The output is channels-last
    where ``x`` is (and has more than one channel). ``antialias``: the mean over each
    output pixel's footprint (:mod:`.antialias`; bilinear only).
    """
    k = _load()
    n, c, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and c > 1
    out = torch.empty(n, c, out_h, out_w, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last
                      else torch.contiguous_format)
    blocks = -(-out_h * out_w // k.BLOCK)
    with _on(x.device):
        if antialias:
            _launcher(k.warp_aa_fwd_kernel, x)[(n * blocks,)](
                x, m, out, c, h, w, out_h, out_w, blocks, *x.stride(), *out.stride(), _EPS16,
                BORDER=border, ALIGN=align, PROJ=projective, BLOCK=k.BLOCK)
        else:
            _launcher(k.warp_fwd_kernel, x)[(n * blocks,)](
                x, m, out, c, h, w, out_h, out_w, blocks, *x.stride(), *out.stride(), _EPS16,
                NEAREST=nearest, BORDER=border, ALIGN=align, PROJ=projective, BLOCK=k.BLOCK)
    return out


def fused_backward(x: torch.Tensor, m: torch.Tensor, grad_out: torch.Tensor, need_x: bool,
                   need_m: bool, nearest: bool, border: bool, align: bool, projective: bool,
                   antialias: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`fused_forward` (same ``x``, ``m`` and options) for ``grad_out``.

    Returns ``(grad_x, grad_m)``: grad_x ``(N, C, H, W)`` contiguous, dtype of ``x``,
    where ``need_x`` (NaN for the images whose ``grad_out`` is not finite), else None;
    grad_m ``(N, 3, 3)`` float32 where ``need_m`` (last row 0 unless ``projective``),
    else None. Bit-identical run to run (see :mod:`torchstn.ops.triton`).
    """
    k = _load()
    n, c, h, w = x.shape
    out_h, out_w = grad_out.shape[2:]
    programs = -(-out_h * out_w // k.BLOCK)
    scale, finite = _fixed_point_scale(grad_out)
    dev = x.device
    q = torch.zeros(n, c, h, w, dtype=torch.int64, device=dev) if need_x else \
        torch.zeros(1, dtype=torch.int64, device=dev)
    part = torch.zeros(n, programs, 9, dtype=torch.float32, device=dev)
    with _on(dev):
        if antialias:
            _launcher(k.warp_aa_bwd_kernel, x)[(n * programs,)](
                x, m, grad_out, q, scale, part, c, h, w, out_h, out_w, programs, *x.stride(),
                *grad_out.stride(), _EPS16, NEED_X=need_x, NEED_M=need_m, BORDER=border,
                ALIGN=align, PROJ=projective, BLOCK=k.BLOCK)
        else:
            _launcher(k.warp_bwd_kernel, x)[(n * programs,)](
                x, m, grad_out, q, scale, part, c, h, w, out_h, out_w, programs, *x.stride(),
                *grad_out.stride(), _EPS16, NEED_X=need_x, NEED_M=need_m, NEAREST=nearest,
                BORDER=border, ALIGN=align, PROJ=projective, BLOCK=k.BLOCK)
    gx = gm = None
    if need_x:
        gx = torch.empty(n, c, h, w, dtype=torch.float32, device=dev)
        total = q.numel()
        with _on(dev):
            _launcher(k.fixed_to_float_kernel, x)[(-(-total // 1024),)](
                q, scale, gx, c * h * w, total, BLOCK=1024)
        gx = gx.to(x.dtype)
        # Non-finite output gradients have no fixed-point form: say so with NaN.
        gx = torch.where(finite.view(-1, 1, 1, 1), gx, torch.full_like(gx, float("nan")))
    if need_m:
        gm = part.sum(1).view(n, 3, 3)
        if not projective:
            gm[:, 2] = 0.0
    return gx, gm
