"""The anti-aliased GPU kernels: bilinear sampling averaged over each output pixel's
footprint (``antialias=True`` on the ``triton`` backend).

They compute what the CPU kernels (:mod:`torchstn.ops.numba.antialias`) and the
reference (:func:`torchstn.antialias.antialiased_sample`) compute, in float32: for each
output pixel its sample point ``g``, the footprint edges (the steps of ``g`` to the
neighbouring output pixels, central inside and one-sided at the edges: ``(g(j_r) -
g(j_l)) / (j_r - j_l)`` with the neighbours clamped to the image), ``k = ceil(length -
1e-3)`` points along each edge (1 to ``MAX_SAMPLES``) and the mean of the bilinear
samples there. A program loops over the most points any of its pixels needs, masking
the rest.

The backward pass is deterministic as the plain one (:mod:`torchstn.ops.triton`): the
input gradient in int64 fixed point with integer atomics (each sample's weights sum to
1 / (k_x k_y), so the backend's per-image scale bounds every sum), and each program's 9
partial matrix-gradient sums in its own slot. The points' gradient goes to the grid
points that the centre and the edges are made of, and from each through Eq. 1 to the
matrix.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .coords import FAR, _bilinear_taps, _load_taps, _program_pixels

__all__ = ["MAX_SAMPLES", "warp_aa_bwd_kernel", "warp_aa_fwd_kernel"]

MAX_SAMPLES = tl.constexpr(32)  # torchstn.antialias.MAX_SAMPLES
SLACK = tl.constexpr(1.0e-3)  # torchstn.antialias._SLACK


@triton.jit
def _out_coord(k, size, ALIGN: tl.constexpr):
    """The normalised coordinate of output pixel ``k`` (int) along an axis of ``size``."""
    if ALIGN:
        return tl.where(size > 1, -1.0 + 2.0 * k.to(tl.float32) / tl.maximum(size - 1, 1), 0.0)
    else:
        return (2.0 * k.to(tl.float32) + 1.0) / size - 1.0


@triton.jit
def _point(m_ptr, n, u, v, eps16, PROJ: tl.constexpr):
    """Normalised input point of output points ``(u, v)``: x, y, w, okx, oky (as
    numba.antialias._point)."""
    mb = m_ptr + n * 9
    x = tl.load(mb + 0) * u + tl.load(mb + 1) * v + tl.load(mb + 2)
    y = tl.load(mb + 3) * u + tl.load(mb + 4) * v + tl.load(mb + 5)
    one = tl.full(u.shape, 1.0, tl.float32)
    w = one
    okx = one
    oky = one
    if PROJ:
        m20 = tl.load(mb + 6)
        m21 = tl.load(mb + 7)
        m22 = tl.load(mb + 8)
        thresh = eps16 * (tl.abs(m20) + tl.abs(m21) + tl.abs(m22))
        wr = m20 * u + m21 * v + m22
        valid = wr > thresh
        w = tl.where(valid, wr, 1.0)
        x = x / w
        y = y / w
        okx = tl.where(valid & (x <= FAR) & (x >= -FAR), 1.0, 0.0)
        oky = tl.where(valid & (y <= FAR) & (y >= -FAR), 1.0, 0.0)
        x = tl.where(valid, tl.minimum(tl.maximum(x, -FAR), FAR), FAR)
        y = tl.where(valid, tl.minimum(tl.maximum(y, -FAR), FAR), FAR)
    return x, y, w, okx, oky


@triton.jit
def _count(ex, ey, sx, sy):
    """Points along a footprint edge (normalised): ceil(length in pixels - SLACK), 1 to
    MAX_SAMPLES, 1 where not finite (int32)."""
    length = tl.sqrt((ex * sx) * (ex * sx) + (ey * sy) * (ey * sy))
    k = tl.ceil(length - SLACK)
    k = tl.where(k == k, k, 1.0)  # NaN
    return tl.minimum(tl.maximum(k, 1.0), MAX_SAMPLES * 1.0).to(tl.int32)


@triton.jit
def _footprints(m_ptr, n, i, j, H, W, Ho, Wo, eps16, ALIGN: tl.constexpr, PROJ: tl.constexpr):
    """Centre, edges, counts and neighbour indices of output pixels (i, j)."""
    if ALIGN:
        sx = 0.5 * (W - 1)
        sy = 0.5 * (H - 1)
    else:
        sx = 0.5 * W
        sy = 0.5 * H
    u = _out_coord(j, Wo, ALIGN)
    v = _out_coord(i, Ho, ALIGN)
    jr = tl.minimum(j + 1, Wo - 1)
    jl = tl.maximum(j - 1, 0)
    ir = tl.minimum(i + 1, Ho - 1)
    il = tl.maximum(i - 1, 0)
    cx, cy, _, _, _ = _point(m_ptr, n, u, v, eps16, PROJ)
    rx, ry, _, _, _ = _point(m_ptr, n, _out_coord(jr, Wo, ALIGN), v, eps16, PROJ)
    lx, ly, _, _, _ = _point(m_ptr, n, _out_coord(jl, Wo, ALIGN), v, eps16, PROJ)
    dx, dy, _, _, _ = _point(m_ptr, n, u, _out_coord(ir, Ho, ALIGN), eps16, PROJ)
    ux, uy, _, _, _ = _point(m_ptr, n, u, _out_coord(il, Ho, ALIGN), eps16, PROJ)
    spanx = tl.maximum(jr - jl, 1).to(tl.float32)  # 0 steps where Wo == 1 (rx == lx)
    spany = tl.maximum(ir - il, 1).to(tl.float32)
    exx = (rx - lx) / spanx
    exy = (ry - ly) / spanx
    eyx = (dx - ux) / spany
    eyy = (dy - uy) / spany
    kx = _count(exx, exy, sx, sy)
    ky = _count(eyx, eyy, sx, sy)
    return (u, v, cx, cy, exx, exy, eyx, eyy, kx, ky, sx, sy, jr, jl, ir, il, spanx, spany)


@triton.jit
def _program_counts(kx, ky, mask):
    """The counts of the program's pixels (1 past the image), the most along each edge
    (the program's loop bounds) and each pixel's 1 / (kx ky)."""
    kx = tl.where(mask, kx, 1)
    ky = tl.where(mask, ky, 1)
    return kx, ky, tl.max(kx, axis=0), tl.max(ky, axis=0), 1.0 / (kx * ky).to(tl.float32)


@triton.jit
def _sample(cx, cy, exx, exy, eyx, eyy, a, b, kx, ky, sx, sy, H, W, BORDER: tl.constexpr):
    """Pixel coordinates of point (a, b) of each footprint, with d(pixel)/d(normalised)
    (0 where the border clip holds it)."""
    dxs = (a + 0.5) / kx.to(tl.float32) - 0.5
    dys = (b + 0.5) / ky.to(tl.float32) - 0.5
    ix = (cx + dys * eyx + dxs * exx) * sx + 0.5 * (W - 1)
    iy = (cy + dys * eyy + dxs * exy) * sy + 0.5 * (H - 1)
    gx = sx + 0.0 * ix
    gy = sy + 0.0 * iy
    if BORDER:  # as grid_sample's clip_coordinates_set_grad
        keep_x = (ix > 0.0) & (ix < W - 1)
        keep_y = (iy > 0.0) & (iy < H - 1)
        gx = tl.where(keep_x, gx, 0.0)
        gy = tl.where(keep_y, gy, 0.0)
        ix = tl.where(keep_x, ix, tl.where(ix > 0.0, W - 1.0, 0.0))
        iy = tl.where(keep_y, iy, tl.where(iy > 0.0, H - 1.0, 0.0))
    ix = tl.where(ix > -2.0, tl.minimum(ix, W + 1.0), -2.0)
    iy = tl.where(iy > -2.0, tl.minimum(iy, H + 1.0), -2.0)
    return ix, iy, gx, gy, dxs, dys


@triton.jit
def warp_aa_fwd_kernel(x_ptr, m_ptr, out_ptr, C, H, W, Ho, Wo, BLOCKS,
                       sxn, sxc, sxh, sxw, son, soc, soh, sow, eps16,
                       BORDER: tl.constexpr, ALIGN: tl.constexpr, PROJ: tl.constexpr,
                       BLOCK: tl.constexpr):
    n, pb, offs, mask = _program_pixels(BLOCKS, Ho, Wo, BLOCK)
    i = offs // Wo
    j = offs - i * Wo
    (_, _, cx, cy, exx, exy, eyx, eyy, kx, ky, sx, sy, _, _, _, _, _, _) = _footprints(
        m_ptr, n, i, j, H, W, Ho, Wo, eps16, ALIGN, PROJ)
    kx, ky, most_x, most_y, inv = _program_counts(kx, ky, mask)
    x_base = x_ptr + n * sxn
    o_ptrs = out_ptr + n * son + i.to(tl.int64) * soh + j.to(tl.int64) * sow
    for c in range(C):
        ci = tl.cast(c, tl.int64)  # int64 channel offsets
        acc = tl.zeros([BLOCK], tl.float32)
        for b in range(most_y):
            for a in range(most_x):
                use = mask & (a < kx) & (b < ky)
                ix, iy, _, _, _, _ = _sample(cx, cy, exx, exy, eyx, eyy, a, b, kx, ky, sx, sy,
                                             H, W, BORDER)
                x0, y0, _, _, ok00, ok01, ok10, ok11, w00, w01, w10, w11 = _bilinear_taps(
                    ix, iy, use, H, W)
                p00 = x_base + ci * sxc + y0 * sxh + x0 * sxw
                v00, v01, v10, v11 = _load_taps(p00, sxh, sxw, ok00, ok01, ok10, ok11)
                acc += w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
        tl.store(o_ptrs + ci * soc, (acc * inv).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _chain(a0, a1, a2, a3, a4, a5, a6, a7, a8, m_ptr, n, u, v, gx, gy, eps16,
           PROJ: tl.constexpr):
    """The matrix gradient (9 vectors, row-major) ``a0..a8`` plus that of the grid points
    (u, v) whose gradient is (gx, gy) (normalised)."""
    x, y, w, okx, oky = _point(m_ptr, n, u, v, eps16, PROJ)
    gx = gx * okx
    gy = gy * oky
    gw = -(gx * x + gy * y) / w
    gx = gx / w
    gy = gy / w
    return (a0 + gx * u, a1 + gx * v, a2 + gx, a3 + gy * u, a4 + gy * v, a5 + gy,
            a6 + gw * u, a7 + gw * v, a8 + gw)


@triton.jit
def warp_aa_bwd_kernel(x_ptr, m_ptr, go_ptr, gx_ptr, scale_ptr, part_ptr, C, H, W, Ho, Wo,
                       BLOCKS, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, eps16,
                       NEED_X: tl.constexpr, NEED_M: tl.constexpr, BORDER: tl.constexpr,
                       ALIGN: tl.constexpr, PROJ: tl.constexpr, BLOCK: tl.constexpr):
    """Input gradient into ``gx_ptr`` (int64 fixed point, contiguous (N, C, H, W), scale
    ``scale_ptr[n]``) and 9 partial matrix-gradient sums into ``part_ptr[n, program]``."""
    n, pb, offs, mask = _program_pixels(BLOCKS, Ho, Wo, BLOCK)
    i = offs // Wo
    j = offs - i * Wo
    (u, v, cx, cy, exx, exy, eyx, eyy, kx, ky, sx, sy, jr, jl, ir, il, spanx,
     spany) = _footprints(m_ptr, n, i, j, H, W, Ho, Wo, eps16, ALIGN, PROJ)
    kx, ky, most_x, most_y, inv = _program_counts(kx, ky, mask)
    x_base = x_ptr + n * sxn
    g_ptrs = go_ptr + n * sgn + i.to(tl.int64) * sgh + j.to(tl.int64) * sgw
    plane = tl.cast(H, tl.int64) * W  # int64: C * H * W may exceed 2^31
    gx_base = gx_ptr + n * C * plane
    scale = tl.load(scale_ptr + n)
    gcx = tl.zeros([BLOCK], tl.float32)  # G_c, G_x, G_y: the centre's and edges' gradient
    gcy = tl.zeros([BLOCK], tl.float32)
    gxx = tl.zeros([BLOCK], tl.float32)
    gxy = tl.zeros([BLOCK], tl.float32)
    gyx = tl.zeros([BLOCK], tl.float32)
    gyy = tl.zeros([BLOCK], tl.float32)
    for c in range(C):
        ci = tl.cast(c, tl.int64)  # int64 channel offsets
        g = tl.load(g_ptrs + ci * sgc, mask=mask, other=0.0).to(tl.float32) * inv
        for b in range(most_y):
            for a in range(most_x):
                use = mask & (a < kx) & (b < ky)
                ix, iy, dpx, dpy, dxs, dys = _sample(cx, cy, exx, exy, eyx, eyy, a, b, kx, ky,
                                                     sx, sy, H, W, BORDER)
                x0, y0, tx, ty, ok00, ok01, ok10, ok11, w00, w01, w10, w11 = _bilinear_taps(
                    ix, iy, use, H, W)
                if NEED_X:
                    gs = g * scale
                    base = gx_base + ci * plane + y0 * W + x0
                    tl.atomic_add(base, tl.floor(w00 * gs + 0.5).to(tl.int64), mask=ok00)
                    tl.atomic_add(base + 1, tl.floor(w01 * gs + 0.5).to(tl.int64), mask=ok01)
                    tl.atomic_add(base + W, tl.floor(w10 * gs + 0.5).to(tl.int64), mask=ok10)
                    tl.atomic_add(base + W + 1, tl.floor(w11 * gs + 0.5).to(tl.int64),
                                  mask=ok11)
                if NEED_M:
                    p00 = x_base + ci * sxc + y0 * sxh + x0 * sxw
                    v00, v01, v10, v11 = _load_taps(p00, sxh, sxw, ok00, ok01, ok10, ok11)
                    px = tl.where(use, g * ((v01 - v00) * (1.0 - ty) + (v11 - v10) * ty)
                                  * dpx, 0.0)
                    py = tl.where(use, g * ((v10 - v00) * (1.0 - tx) + (v11 - v01) * tx)
                                  * dpy, 0.0)
                    gcx += px
                    gcy += py
                    gxx += dxs * px
                    gxy += dxs * py
                    gyx += dys * px
                    gyy += dys * py
    if NEED_M:
        # The point is g(i, j) + dy * e_y + dx * e_x, e_x = (g(j_r) - g(j_l)) / span.
        ur = _out_coord(jr, Wo, ALIGN)
        ul = _out_coord(jl, Wo, ALIGN)
        vr = _out_coord(ir, Ho, ALIGN)
        vl = _out_coord(il, Ho, ALIGN)
        hx = tl.where(Wo > 1, 1.0, 0.0) / spanx
        hy = tl.where(Ho > 1, 1.0, 0.0) / spany
        z = tl.zeros([BLOCK], tl.float32)
        a = _chain(z, z, z, z, z, z, z, z, z, m_ptr, n, u, v, gcx, gcy, eps16, PROJ)
        a = _chain(*a, m_ptr, n, ur, v, gxx * hx, gxy * hx, eps16, PROJ)
        a = _chain(*a, m_ptr, n, ul, v, -gxx * hx, -gxy * hx, eps16, PROJ)
        a = _chain(*a, m_ptr, n, u, vr, gyx * hy, gyy * hy, eps16, PROJ)
        a0, a1, a2, a3, a4, a5, a6, a7, a8 = _chain(*a, m_ptr, n, u, vl, -gyx * hy, -gyy * hy,
                                                    eps16, PROJ)
        pp = part_ptr + (n * BLOCKS + pb) * 9
        tl.store(pp + 0, tl.sum(tl.where(mask, a0, 0.0), axis=0))
        tl.store(pp + 1, tl.sum(tl.where(mask, a1, 0.0), axis=0))
        tl.store(pp + 2, tl.sum(tl.where(mask, a2, 0.0), axis=0))
        tl.store(pp + 3, tl.sum(tl.where(mask, a3, 0.0), axis=0))
        tl.store(pp + 4, tl.sum(tl.where(mask, a4, 0.0), axis=0))
        tl.store(pp + 5, tl.sum(tl.where(mask, a5, 0.0), axis=0))
        if PROJ:
            tl.store(pp + 6, tl.sum(tl.where(mask, a6, 0.0), axis=0))
            tl.store(pp + 7, tl.sum(tl.where(mask, a7, 0.0), axis=0))
            tl.store(pp + 8, tl.sum(tl.where(mask, a8, 0.0), axis=0))
