"""The Triton jit helpers every GPU kernel shares: coordinates, taps and pixel blocks.

``_program_pixels``: the image and output pixels of a program; ``_sample_points``: their
input pixel coordinates from the matrix (paper, Eq. 1), with the derivatives the
backward pass needs; ``_nearest_tap`` / ``_bilinear_taps``: the pixels they read and the
weights; ``_load_taps``: the 2x2 neighbourhood in float32.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["FAR", "_bilinear_taps", "_load_taps", "_nearest_tap", "_program_pixels",
           "_round_half_even", "_sample_points"]

FAR = tl.constexpr(1.0e4)  # torchstn.grids.FAR (a constexpr: kernels may read it)


@triton.jit
def _sample_points(m_ptr, n, offs, mask, H, W, Ho, Wo, eps16,
                   BORDER: tl.constexpr, ALIGN: tl.constexpr, PROJ: tl.constexpr):
    """Input pixel coordinates of the output pixels ``offs`` of image ``n``.

    Returns ix, iy, d(ix)/dx, d(iy)/dy (0 where the coordinate does not depend on the
    matrix), the normalised point (x, y), w, and the normalised output point (xo, yo).
    """
    i = offs // Wo
    j = offs - i * Wo
    if ALIGN:
        xo = tl.where(Wo > 1, -1.0 + 2.0 * j.to(tl.float32) / tl.maximum(Wo - 1, 1), 0.0)
        yo = tl.where(Ho > 1, -1.0 + 2.0 * i.to(tl.float32) / tl.maximum(Ho - 1, 1), 0.0)
        sx = 0.5 * (W - 1)
        sy = 0.5 * (H - 1)
    else:
        xo = (2.0 * j.to(tl.float32) + 1.0) / Wo - 1.0
        yo = (2.0 * i.to(tl.float32) + 1.0) / Ho - 1.0
        sx = 0.5 * W
        sy = 0.5 * H
    mb = m_ptr + n * 9
    m00 = tl.load(mb + 0)
    m01 = tl.load(mb + 1)
    m02 = tl.load(mb + 2)
    m10 = tl.load(mb + 3)
    m11 = tl.load(mb + 4)
    m12 = tl.load(mb + 5)
    x = m00 * xo + m01 * yo + m02
    y = m10 * xo + m11 * yo + m12
    one = tl.full(xo.shape, 1.0, tl.float32)
    okx = one
    oky = one
    w = one
    if PROJ:
        m20 = tl.load(mb + 6)
        m21 = tl.load(mb + 7)
        m22 = tl.load(mb + 8)
        thresh = eps16 * (tl.abs(m20) + tl.abs(m21) + tl.abs(m22))
        wr = m20 * xo + m21 * yo + m22
        valid = wr > thresh
        w = tl.where(valid, wr, 1.0)
        x = x / w
        y = y / w
        okx = tl.where(valid & (x <= FAR) & (x >= -FAR), 1.0, 0.0)
        oky = tl.where(valid & (y <= FAR) & (y >= -FAR), 1.0, 0.0)
        x = tl.where(valid, tl.minimum(tl.maximum(x, -FAR), FAR), FAR)
        y = tl.where(valid, tl.minimum(tl.maximum(y, -FAR), FAR), FAR)
    ox = 0.5 * (W - 1)
    oy = 0.5 * (H - 1)
    ix = x * sx + ox
    iy = y * sy + oy
    dx = sx * okx
    dy = sy * oky
    if BORDER:  # as grid_sample's clip_coordinates_set_grad
        keep_x = (ix > 0.0) & (ix < W - 1)
        keep_y = (iy > 0.0) & (iy < H - 1)
        dx = tl.where(keep_x, dx, 0.0)
        dy = tl.where(keep_y, dy, 0.0)
        ix = tl.where(keep_x, ix, tl.where(ix > 0.0, W - 1.0, 0.0))
        iy = tl.where(keep_y, iy, tl.where(iy > 0.0, H - 1.0, 0.0))
    # Beyond [-2, size + 1] only padding is read; clamping keeps integer conversion
    # defined (NaN goes to -2).
    ix = tl.where(ix > -2.0, tl.minimum(ix, W + 1.0), -2.0)
    iy = tl.where(iy > -2.0, tl.minimum(iy, H + 1.0), -2.0)
    return ix, iy, dx, dy, x, y, w, xo, yo


@triton.jit
def _program_pixels(BLOCKS, Ho, Wo, BLOCK: tl.constexpr):
    """Image and pixel block of this program (a 1-D launch of N * BLOCKS programs: CUDA
    caps the second grid dimension at 65535), in int64 indices."""
    pid = tl.cast(tl.program_id(0), tl.int64)
    n = pid // BLOCKS
    pb = pid - n * BLOCKS
    offs = pb * BLOCK + tl.arange(0, BLOCK)
    mask = offs < tl.cast(Ho, tl.int64) * Wo
    return n, pb, offs, mask


@triton.jit
def _round_half_even(v):
    """As nearbyint: to nearest, ties to even (v - floor(v) is exact)."""
    f = tl.floor(v)
    frac = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((frac > 0.5) | ((frac == 0.5) & odd), f + 1.0, f)


@triton.jit
def _nearest_tap(ix, iy, mask, H, W):
    """Column, row and in-image mask of the nearest pixel (ties to even, as nearbyint)."""
    xn = _round_half_even(ix).to(tl.int64)
    yn = _round_half_even(iy).to(tl.int64)
    ok = mask & (xn >= 0) & (xn < W) & (yn >= 0) & (yn < H)
    return xn, yn, ok


@triton.jit
def _bilinear_taps(ix, iy, mask, H, W):
    """Top-left tap (x0, y0), fractions (tx, ty), in-image masks and weights of the 2x2
    neighbourhood, in the order 00, 01 (right), 10 (below), 11."""
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    tx = ix - x0f
    ty = iy - y0f
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    in_x0 = (x0 >= 0) & (x0 < W)
    in_x1 = (x0 + 1 >= 0) & (x0 + 1 < W)
    in_y0 = mask & (y0 >= 0) & (y0 < H)
    in_y1 = mask & (y0 + 1 >= 0) & (y0 + 1 < H)
    return (x0, y0, tx, ty, in_y0 & in_x0, in_y0 & in_x1, in_y1 & in_x0, in_y1 & in_x1,
            (1.0 - tx) * (1.0 - ty), tx * (1.0 - ty), (1.0 - tx) * ty, tx * ty)


@triton.jit
def _load_taps(p, sxh, sxw, ok00, ok01, ok10, ok11):
    """The 2x2 neighbourhood at ``p`` in float32, 0 where outside the image."""
    v00 = tl.load(p, mask=ok00, other=0.0).to(tl.float32)
    v01 = tl.load(p + sxw, mask=ok01, other=0.0).to(tl.float32)
    v10 = tl.load(p + sxh, mask=ok10, other=0.0).to(tl.float32)
    v11 = tl.load(p + sxh + sxw, mask=ok11, other=0.0).to(tl.float32)
    return v00, v01, v10, v11
