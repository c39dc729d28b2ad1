"""Fused GPU warp kernels (Triton): sample coordinates computed from the matrix per pixel.

One program handles ``BLOCK`` output pixels of one image, for every channel; neither the
(N, H, W, 2) grid nor its gradient is ever written to memory. Coordinates and sums are
in float32 whatever the image dtype (float32, float16, bfloat16); tensors are addressed
through their strides, so channels-last images need no copy.

Deterministic backward (bit-identical run to run, no floating-point atomics):

* input gradient: every contribution ``w * g`` is rounded ONCE to a fixed-point integer
  (``round(w * g * 2^s)``, with one power-of-two scale ``2^s`` per image chosen so that
  no sum can overflow int64) and accumulated with integer atomics. Integer addition is
  exact and associative, so the order in which the GPU performs the atomics cannot change
  the result. A second pass converts the sums back to floating point.
* parameter gradient: each program reduces its pixels and channels to 9 partial sums in a
  fixed order (``tl.sum``) and writes them to its own slot; the slots are summed by
  ``torch.sum`` afterwards, whose order does not depend on scheduling.

These kernels also run on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``), which
is how the test suite checks them on machines without a GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl

FAR = tl.constexpr(1.0e4)  # torchstn.grids.FAR (a constexpr: kernels may read it)
BLOCK = 256


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
