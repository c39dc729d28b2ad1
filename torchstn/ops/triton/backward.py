"""The GPU backward kernels: fixed-point input gradient, per-program matrix-gradient sums.

``warp_bwd_kernel`` accumulates the input gradient as int64 fixed point with integer
atomics (one power-of-two scale per image, from the backend's ``_fixed_point_scale``)
and writes each program's 9 partial matrix-gradient sums to its own slot;
``fixed_to_float_kernel`` converts the fixed-point sums back. See
:mod:`torchstn.ops.triton` for why this is deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .coords import _bilinear_taps, _load_taps, _nearest_tap, _program_pixels, _sample_points

__all__ = ["fixed_to_float_kernel", "warp_bwd_kernel"]


@triton.jit
def warp_bwd_kernel(x_ptr, m_ptr, go_ptr, gx_ptr, scale_ptr, part_ptr, C, H, W, Ho, Wo,
                    BLOCKS, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, eps16,
                    NEED_X: tl.constexpr, NEED_M: tl.constexpr, NEAREST: tl.constexpr,
                    BORDER: tl.constexpr, ALIGN: tl.constexpr, PROJ: tl.constexpr,
                    BLOCK: tl.constexpr):
    """Input gradient into ``gx_ptr`` (int64 fixed point, contiguous (N, C, H, W), scale
    ``scale_ptr[n]``) and 9 partial matrix-gradient sums into ``part_ptr[n, program]``."""
    n, pb, offs, mask = _program_pixels(BLOCKS, Ho, Wo, BLOCK)
    ix, iy, dxdn, dydn, x, y, w, xo, yo = _sample_points(
        m_ptr, n, offs, mask, H, W, Ho, Wo, eps16, BORDER, ALIGN, PROJ)
    i = offs // Wo
    j = offs - i * Wo
    x_base = x_ptr + n * sxn
    g_ptrs = go_ptr + n * sgn + i.to(tl.int64) * sgh + j.to(tl.int64) * sgw
    plane = tl.cast(H, tl.int64) * W  # int64: C * H * W may exceed 2^31
    gx_base = gx_ptr + n * C * plane
    scale = tl.load(scale_ptr + n)
    if NEAREST:
        if NEED_X:
            xn, yn, ok = _nearest_tap(ix, iy, mask, H, W)
            for c in range(C):
                ci = tl.cast(c, tl.int64)  # int64 channel offsets
                g = tl.load(g_ptrs + ci * sgc, mask=mask, other=0.0).to(tl.float32)
                q = tl.floor(g * scale + 0.5).to(tl.int64)
                tl.atomic_add(gx_base + ci * plane + yn * W + xn, q, mask=ok)
        # Nearest sampling has no coordinate gradient: the partial sums stay zero.
    else:
        x0, y0, tx, ty, ok00, ok01, ok10, ok11, w00, w01, w10, w11 = _bilinear_taps(
            ix, iy, mask, H, W)
        p00 = x_base + y0 * sxh + x0 * sxw
        k00 = y0 * W + x0
        gix = tl.zeros([BLOCK], tl.float32)
        giy = tl.zeros([BLOCK], tl.float32)
        for c in range(C):
            ci = tl.cast(c, tl.int64)  # int64 channel offsets
            g = tl.load(g_ptrs + ci * sgc, mask=mask, other=0.0).to(tl.float32)
            if NEED_X:
                gs = g * scale
                base = gx_base + ci * plane + k00
                tl.atomic_add(base, tl.floor(w00 * gs + 0.5).to(tl.int64), mask=ok00)
                tl.atomic_add(base + 1, tl.floor(w01 * gs + 0.5).to(tl.int64), mask=ok01)
                tl.atomic_add(base + W, tl.floor(w10 * gs + 0.5).to(tl.int64), mask=ok10)
                tl.atomic_add(base + W + 1, tl.floor(w11 * gs + 0.5).to(tl.int64), mask=ok11)
            if NEED_M:
                v00, v01, v10, v11 = _load_taps(p00 + ci * sxc, sxh, sxw,
                                                ok00, ok01, ok10, ok11)
                gix += g * ((v01 - v00) * (1.0 - ty) + (v11 - v10) * ty)
                giy += g * ((v10 - v00) * (1.0 - tx) + (v11 - v01) * tx)
        if NEED_M:
            dxn = tl.where(mask, gix * dxdn, 0.0)  # dL / d(normalised input x)
            dyn = tl.where(mask, giy * dydn, 0.0)
            du = dxn / w
            dv = dyn / w
            pp = part_ptr + (n * BLOCKS + pb) * 9
            tl.store(pp + 0, tl.sum(du * xo, axis=0))
            tl.store(pp + 1, tl.sum(du * yo, axis=0))
            tl.store(pp + 2, tl.sum(du, axis=0))
            tl.store(pp + 3, tl.sum(dv * xo, axis=0))
            tl.store(pp + 4, tl.sum(dv * yo, axis=0))
            tl.store(pp + 5, tl.sum(dv, axis=0))
            if PROJ:
                dw = -(dxn * x + dyn * y) / w
                tl.store(pp + 6, tl.sum(dw * xo, axis=0))
                tl.store(pp + 7, tl.sum(dw * yo, axis=0))
                tl.store(pp + 8, tl.sum(dw, axis=0))


@triton.jit
def fixed_to_float_kernel(q_ptr, scale_ptr, out_ptr, per_image, total, BLOCK: tl.constexpr):
    """out = q / scale[image] for contiguous (N, C, H, W) int64 ``q``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    q = tl.load(q_ptr + offs, mask=mask, other=0)
    s = tl.load(scale_ptr + offs // per_image, mask=mask, other=1.0)
    v = q.to(tl.float64) / s.to(tl.float64)
    tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)
