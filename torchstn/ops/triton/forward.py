"""The GPU forward kernel, ``warp_fwd_kernel``.

One program samples ``BLOCK`` output pixels of one image, for every channel, addressing
the tensors through their strides; coordinates and sums are in float32.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .coords import _bilinear_taps, _load_taps, _nearest_tap, _program_pixels, _sample_points

__all__ = ["warp_fwd_kernel"]


@triton.jit
def warp_fwd_kernel(x_ptr, m_ptr, out_ptr, C, H, W, Ho, Wo, BLOCKS,
                    sxn, sxc, sxh, sxw, son, soc, soh, sow, eps16,
                    NEAREST: tl.constexpr, BORDER: tl.constexpr, ALIGN: tl.constexpr,
                    PROJ: tl.constexpr, BLOCK: tl.constexpr):
    n, pb, offs, mask = _program_pixels(BLOCKS, Ho, Wo, BLOCK)
    ix, iy, _, _, _, _, _, _, _ = _sample_points(m_ptr, n, offs, mask, H, W, Ho, Wo, eps16,
                                                 BORDER, ALIGN, PROJ)
    i = offs // Wo
    j = offs - i * Wo
    x_base = x_ptr + n * sxn
    o_ptrs = out_ptr + n * son + i.to(tl.int64) * soh + j.to(tl.int64) * sow
    if NEAREST:
        xn, yn, ok = _nearest_tap(ix, iy, mask, H, W)
        src = x_base + yn * sxh + xn * sxw
        for c in range(C):
            ci = tl.cast(c, tl.int64)  # int64 channel offsets
            v = tl.load(src + ci * sxc, mask=ok, other=0.0)
            tl.store(o_ptrs + ci * soc, v, mask=mask)
    else:
        x0, y0, _, _, ok00, ok01, ok10, ok11, w00, w01, w10, w11 = _bilinear_taps(
            ix, iy, mask, H, W)
        p00 = x_base + y0 * sxh + x0 * sxw
        for c in range(C):
            ci = tl.cast(c, tl.int64)  # int64 channel offsets
            v00, v01, v10, v11 = _load_taps(p00 + ci * sxc, sxh, sxw, ok00, ok01, ok10, ok11)
            acc = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
            tl.store(o_ptrs + ci * soc, acc.to(out_ptr.dtype.element_ty), mask=mask)
