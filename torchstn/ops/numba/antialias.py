"""The anti-aliased CPU kernels: bilinear sampling averaged over each output pixel's
footprint, fused with the grid generator (``antialias=True`` on the ``numba`` backend).

They compute what :func:`torchstn.antialias.antialiased_sample` computes on the grid of a
matrix family, without writing the grid, the supersampling points or their values to
memory. For output pixel ``(i, j)`` of image ``n``:

- its sample point ``g(i, j)`` and its neighbours' (normalised; Eq. 1 of the paper, with
  the horizon and ``FAR`` rules of :func:`torchstn.grids.projective_grid`);
- the footprint edges: the steps of ``g`` to the neighbouring output pixels, central
  inside and one-sided at the edges (``antialias._steps``);
- ``k = ceil(length in input pixels - 1e-3)`` points along each edge (1 to
  ``MAX_SAMPLES``), spread evenly over the footprint; the value is the mean of the
  bilinear samples there (zeros or border padding, as ``grid_sample``).

The backward pass scatters the input gradient and reduces the points' gradient to the
matrix: each point is ``g + dy * e_y + dx * e_x``, so the gradient of the centre and of
the edges (``G_c``, ``G_x``, ``G_y``, sums over the points) goes to the up to five
grid points they are made of, and from each through Eq. 1 to the matrix. The counts
``k`` are piecewise constant and carry no gradient.

Determinism: the forward pass writes each output value from one task (runs of output
rows). In the backward pass a task is an (image, channel group) pair: it alone writes its
channels' input gradient, in a fixed order, and its matrix gradient goes to its own slot,
summed in a fixed order by the backend. Nothing depends on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .coords import _FAR, _base_coords

__all__ = ["MAX_SAMPLES", "SLACK", "warp_antialias_backward", "warp_antialias_backward_serial",
           "warp_antialias_forward", "warp_antialias_forward_serial"]

# torchstn.antialias.MAX_SAMPLES and _SLACK (a test checks that they agree).
MAX_SAMPLES = 32
SLACK = 1e-3


@njit(inline="always", cache=True)
def _point(m, u, v, projective, thresh):
    """The normalised input point of output point ``(u, v)``: ``(x, y, w, okx, oky)``;
    ``w`` the homogeneous coordinate (1 for affine maps), ``okx``/``oky`` 1.0 where the
    coordinate depends on the matrix, 0.0 where it is clamped to +-FAR or behind the
    horizon (as :func:`torchstn.grids.projective_grid`)."""
    px = m[0, 0] * u + (m[0, 1] * v + m[0, 2])
    py = m[1, 0] * u + (m[1, 1] * v + m[1, 2])
    if not projective:
        return px, py, 1.0, 1.0, 1.0
    w = m[2, 0] * u + (m[2, 1] * v + m[2, 2])
    if not w > thresh:
        return _FAR, _FAR, 1.0, 0.0, 0.0
    x = px / w
    y = py / w
    okx = oky = 1.0
    if x > _FAR:
        x, okx = _FAR, 0.0
    elif x < -_FAR:
        x, okx = -_FAR, 0.0
    if y > _FAR:
        y, oky = _FAR, 0.0
    elif y < -_FAR:
        y, oky = -_FAR, 0.0
    return x, y, w, okx, oky


@njit(inline="always", cache=True)
def _count(ex, ey, sxu, syu):
    """Points along a footprint edge ``(ex, ey)`` (normalised): ceil(length in input
    pixels - SLACK), from 1 to MAX_SAMPLES, 1 where it is not finite."""
    length = np.sqrt((ex * sxu) ** 2 + (ey * syu) ** 2)
    k = np.ceil(length - SLACK)
    if not np.isfinite(k) or k < 1.0:
        return 1
    if k > MAX_SAMPLES:
        return MAX_SAMPLES
    return int(k)


@njit(inline="always", cache=True)
def _neighbours(j, n):
    """The grid points whose difference is the footprint edge at index ``j`` of ``n``
    (the central difference inside, the one-sided one at either end) and the factor
    that divides it: ``(ja, jb, 1 / (ja - jb))`` (1 or 1/2: exact in floating point)."""
    ja = min(j + 1, n - 1)
    jb = max(j - 1, 0)
    return ja, jb, 1.0 / (ja - jb)


@njit(inline="always", cache=True)
def _steps(m, xo, yo, i, j, projective, thresh):
    """The footprint edges of output pixel ``(i, j)``, as ``antialias._steps``:
    ``(exx, exy, eyx, eyy)`` (zero along an axis of one output pixel)."""
    Wo = xo.shape[0]
    Ho = yo.shape[0]
    exx = exy = eyx = eyy = 0.0
    if Wo > 1:
        ja, jb, a = _neighbours(j, Wo)
        rx, ry, _, _, _ = _point(m, xo[ja], yo[i], projective, thresh)
        lx, ly, _, _, _ = _point(m, xo[jb], yo[i], projective, thresh)
        exx, exy = (rx - lx) * a, (ry - ly) * a
    if Ho > 1:
        ia, ib, a = _neighbours(i, Ho)
        dx, dy, _, _, _ = _point(m, xo[j], yo[ia], projective, thresh)
        ux, uy, _, _, _ = _point(m, xo[j], yo[ib], projective, thresh)
        eyx, eyy = (dx - ux) * a, (dy - uy) * a
    return exx, exy, eyx, eyy


@njit(inline="always", cache=True)
def _clip(p, size, border):
    """``grid_sample``'s border clip of a pixel coordinate (NaN goes to 0): the clipped
    coordinate and 1.0 where its gradient passes, 0.0 where it was clipped."""
    if not border:
        return p, 1.0
    if p > 0.0 and p < size - 1:
        return p, 1.0
    return (size - 1.0 if p > 0.0 else 0.0), 0.0


@njit(inline="always", cache=True)
def _tap(p, size):
    """The left tap of a pixel coordinate, clamped far enough outside that the integer
    conversion is defined (NaN: outside), and its fraction."""
    q = min(max(p, -2.0), size + 1.0) if p == p else -2.0
    f = np.floor(q)
    return int(f), q - f


@njit(cache=True)
def _geometry(H, W, Ho, Wo, align):
    """The normalised output coordinates along x and y, and grid_sample's unnormalisation
    (pixels per normalised unit, offset) along x and y: ``(xo, yo, sxu, syu, ox, oy)``."""
    xo = _base_coords(Wo, align, False)
    yo = _base_coords(Ho, align, False)
    sxu = 0.5 * (W - 1) if align else 0.5 * W
    syu = 0.5 * (H - 1) if align else 0.5 * H
    return xo, yo, sxu, syu, 0.5 * (W - 1), 0.5 * (H - 1)


@njit(inline="always", cache=True)
def _pixel_footprint(m, xo, yo, i, j, sxu, syu, projective, thresh):
    """Output pixel ``(i, j)``'s grid point, footprint edges and point counts:
    ``(cx, cy, exx, exy, eyx, eyy, kx, ky)``."""
    cx, cy, _, _, _ = _point(m, xo[j], yo[i], projective, thresh)
    exx, exy, eyx, eyy = _steps(m, xo, yo, i, j, projective, thresh)
    return (cx, cy, exx, exy, eyx, eyy, _count(exx, exy, sxu, syu),
            _count(eyx, eyy, sxu, syu))


@njit(inline="always", cache=True)
def _point_tap(bx, by, dx, exx, exy, sxu, syu, ox, oy, H, W, border):
    """Point ``(bx, by) + dx * e_x`` (normalised) in pixels, border-clipped: its left tap
    and fraction along x and y, and 1.0 / 0.0 where the clip passes / holds the gradient:
    ``(x0, tx, okx, y0, ty, oky)``."""
    ix, okx = _clip((bx + dx * exx) * sxu + ox, W, border)
    iy, oky = _clip((by + dx * exy) * syu + oy, H, border)
    x0, tx = _tap(ix, W)
    y0, ty = _tap(iy, H)
    return x0, tx, okx, y0, ty, oky


@njit(inline="always", cache=True)
def _offsets(table, k, filled):
    """The points' offsets along an edge of ``k`` points, ``(a + 0.5) / k - 0.5``, in
    ``table[:k]`` (which holds those of ``filled`` points): filled where ``k`` differs;
    returns ``k``."""
    if k != filled:
        for a in range(k):
            table[a] = (a + 0.5) / k - 0.5
    return k


@njit(inline="always", cache=True)
def _inside(cx, cy, exx, exy, eyx, eyy, sxu, syu, ox, oy, H, W):
    """Whether every point of the footprint and its four taps lie inside the image with a
    pixel to spare: no padding and no border clip can apply, so the taps need no checks
    (False for NaN)."""
    px = cx * sxu + ox
    py = cy * syu + oy
    hx = 0.5 * (abs(exx) + abs(eyx)) * sxu
    hy = 0.5 * (abs(exy) + abs(eyy)) * syu
    return px - hx >= 1.0 and px + hx <= W - 3.0 and py - hy >= 1.0 and py + hy <= H - 3.0


@njit(inline="always", cache=True)
def _interior_tap(bx, by, dx, exx, exy, sxu, syu, ox, oy):
    """:func:`_point_tap` of a point of a footprint inside the image (:func:`_inside`):
    the same values without the clips: ``(x0, tx, y0, ty)``."""
    ix = (bx + dx * exx) * sxu + ox
    iy = (by + dx * exy) * syu + oy
    x0 = int(ix)  # ix, iy >= 1: truncation is the floor
    y0 = int(iy)
    return x0, ix - x0, y0, iy - y0


@njit(inline="always", cache=True)
def _weights(tx, ty):
    """The bilinear weights of the four taps for fractions ``(tx, ty)``:
    ``(w00, w01, w10, w11)``."""
    return (1.0 - tx) * (1.0 - ty), tx * (1.0 - ty), (1.0 - tx) * ty, tx * ty


@njit(inline="always", cache=True)
def _bilinear(flat, k, Wu, w00, w01, w10, w11):
    """The bilinear sample of weights ``w..`` whose top-left tap is at flat offset ``k``
    (rows ``Wu`` apart)."""
    one = np.uint64(1)
    return (w00 * flat[k] + w01 * flat[k + one] + w10 * flat[k + Wu]
            + w11 * flat[k + Wu + one])


@njit(inline="always", cache=True)
def _interior_sums(flat, k0, HW, W, nc, cx, cy, exx, exy, eyx, eyy, sxu, syu, ox, oy, kx,
                   ky, dxs, dys):
    """The sums over a footprint that lies inside the image (:func:`_inside`) of up to
    four channels' bilinear samples, the first at flat offset ``k0``: the same values,
    in the same order, as the general path, without its clips and checks."""
    s0 = s1 = s2 = s3 = 0.0
    Wu = np.uint64(W)
    plane = np.uint64(HW)
    for b in range(ky):
        dy = dys[b]
        bx = cx + dy * eyx
        by = cy + dy * eyy
        for a in range(kx):
            x0, tx, y0, ty = _interior_tap(bx, by, dxs[a], exx, exy, sxu, syu, ox, oy)
            w00, w01, w10, w11 = _weights(tx, ty)
            k = k0 + np.uint64(y0 * W + x0)
            s0 += _bilinear(flat, k, Wu, w00, w01, w10, w11)
            if nc > 1:
                s1 += _bilinear(flat, k + plane, Wu, w00, w01, w10, w11)
            if nc > 2:
                s2 += _bilinear(flat, k + np.uint64(2) * plane, Wu, w00, w01, w10, w11)
            if nc > 3:
                s3 += _bilinear(flat, k + np.uint64(3) * plane, Wu, w00, w01, w10, w11)
    return s0, s1, s2, s3


@njit(inline="always", cache=True)
def _channel_grads(flat, gflat, k, Wu, tx, ty, dq, need_x, need_m, dix, diy):
    """One channel's part of a point's gradients, its top-left tap at flat offset ``k``:
    the input gradient scattered to the four taps (``need_x``), the coordinate gradient
    added to ``(dix, diy)`` (``need_m``) and returned."""
    one = np.uint64(1)
    v00, v01 = flat[k], flat[k + one]
    v10, v11 = flat[k + Wu], flat[k + Wu + one]
    if need_m:
        dix += dq * ((1.0 - ty) * (v01 - v00) + ty * (v11 - v10))
        diy += dq * ((1.0 - tx) * (v10 - v00) + tx * (v11 - v01))
    if need_x:
        gflat[k] += dq * ((1.0 - tx) * (1.0 - ty))
        gflat[k + one] += dq * (tx * (1.0 - ty))
        gflat[k + Wu] += dq * ((1.0 - tx) * ty)
        gflat[k + Wu + one] += dq * (tx * ty)
    return dix, diy


@njit(inline="always", cache=True)
def _add_point(gcx, gcy, gxx, gxy, gyx, gyy, px, py, dx, dy):
    """Add a point's gradient ``(px, py)`` (normalised) at offsets ``(dx, dy)`` to the
    footprint's ``G_c``, ``G_x``, ``G_y``; return them."""
    return gcx + px, gcy + py, gxx + dx * px, gxy + dx * py, gyx + dy * px, gyy + dy * py


@njit(cache=True)
def _forward_task(t, x, m, out, border, align, projective, eps16, tasks):
    """Task ``t`` of :func:`warp_antialias_forward`: a contiguous run of the ``N * Ho``
    output rows."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    xo, yo, sxu, syu, ox, oy = _geometry(H, W, Ho, Wo, align)
    acc = np.empty(C, np.float64)
    dxs = np.empty(MAX_SAMPLES, np.float64)  # the offsets of the points (_offsets)
    dys = np.empty(MAX_SAMPLES, np.float64)
    kx_table = ky_table = 0
    HW = H * W
    flat = x.reshape(N * C * HW)
    Wu = np.uint64(W)
    rows = N * Ho
    per = (rows + tasks - 1) // tasks
    for r in range(t * per, min(rows, (t + 1) * per)):
        n = r // Ho
        i = r - n * Ho
        mn = m[n]
        thresh = eps16 * (abs(mn[2, 0]) + abs(mn[2, 1]) + abs(mn[2, 2]))
        for j in range(Wo):
            cx, cy, exx, exy, eyx, eyy, kx, ky = _pixel_footprint(mn, xo, yo, i, j, sxu, syu,
                                                                 projective, thresh)
            kx_table = _offsets(dxs, kx, kx_table)
            ky_table = _offsets(dys, ky, ky_table)
            scale = 1.0 / (kx * ky)
            if _inside(cx, cy, exx, exy, eyx, eyy, sxu, syu, ox, oy, H, W):
                for c0 in range(0, C, 4):
                    nc = min(4, C - c0)
                    s0, s1, s2, s3 = _interior_sums(
                        flat, np.uint64((n * C + c0) * HW), HW, W, nc, cx, cy, exx, exy,
                        eyx, eyy, sxu, syu, ox, oy, kx, ky, dxs, dys)
                    out[n, c0, i, j] = s0 * scale
                    if nc > 1:
                        out[n, c0 + 1, i, j] = s1 * scale
                    if nc > 2:
                        out[n, c0 + 2, i, j] = s2 * scale
                    if nc > 3:
                        out[n, c0 + 3, i, j] = s3 * scale
                continue
            acc[:] = 0.0
            for b in range(ky):
                dy = dys[b]
                bx = cx + dy * eyx
                by = cy + dy * eyy
                for a in range(kx):
                    dx = dxs[a]
                    x0, tx, _, y0, ty, _ = _point_tap(bx, by, dx, exx, exy, sxu, syu, ox,
                                                      oy, H, W, border)
                    w00, w01, w10, w11 = _weights(tx, ty)
                    if 0 <= x0 and x0 < W - 1 and 0 <= y0 and y0 < H - 1:
                        # Flat unsigned offsets stepped by a plane (no wraparound checks).
                        k = np.uint64((n * C) * HW + y0 * W + x0)
                        for c in range(C):
                            acc[c] += _bilinear(flat, k, Wu, w00, w01, w10, w11)
                            k += np.uint64(HW)
                    else:  # a tap in the padding reads 0
                        ok0, ok1 = 0 <= y0 < H, 0 <= y0 + 1 < H
                        okl, okr = 0 <= x0 < W, 0 <= x0 + 1 < W
                        for c in range(C):
                            s = 0.0
                            if ok0 and okl:
                                s += w00 * x[n, c, y0, x0]
                            if ok0 and okr:
                                s += w01 * x[n, c, y0, x0 + 1]
                            if ok1 and okl:
                                s += w10 * x[n, c, y0 + 1, x0]
                            if ok1 and okr:
                                s += w11 * x[n, c, y0 + 1, x0 + 1]
                            acc[c] += s
            for c in range(C):
                out[n, c, i, j] = acc[c] * scale


@njit(parallel=True, cache=True)
def warp_antialias_forward(x, m, out, border, align, projective, eps16, tasks):
    """out[n, c, i, j] = the mean of x[n, c] over the footprint of output pixel (i, j).

    x: (N, C, H, W); m: (N, 3, 3) float64; out: (N, C, Ho, Wo), dtype of x. The output
    rows are split into ``tasks`` contiguous runs (any split gives the same result).
    """
    for t in prange(tasks):  # (prange's index is unsigned: cast, one body)
        _forward_task(np.int64(t), x, m, out, border, align, projective, eps16, tasks)


@njit(cache=True)
def warp_antialias_forward_serial(x, m, out, border, align, projective, eps16, tasks):
    """warp_antialias_forward on the calling thread."""
    for t in range(tasks):
        _forward_task(t, x, m, out, border, align, projective, eps16, tasks)


# Not inlined (a call per grid point, five per output pixel): inlined at its call sites it
# made the backward kernel's compile three times longer (46 s against 15 s for float32)
# for no speed measured (docs/antialias.md).
@njit(cache=True)
def _chain(acc, m, u, v, gx, gy, projective, thresh):
    """Add to ``acc`` (9, row-major) the matrix gradient of the grid point of output
    point ``(u, v)`` whose gradient is ``(gx, gy)`` (normalised)."""
    if gx == 0.0 and gy == 0.0:
        return
    x, y, w, okx, oky = _point(m, u, v, projective, thresh)
    gx *= okx
    gy *= oky
    if projective:
        gw = -(gx * x + gy * y) / w
        gx /= w
        gy /= w
        acc[6] += gw * u
        acc[7] += gw * v
        acc[8] += gw
    acc[0] += gx * u
    acc[1] += gx * v
    acc[2] += gx
    acc[3] += gy * u
    acc[4] += gy * v
    acc[5] += gy


@njit(cache=True)
def _backward_task(t, x, m, go, gx, gm, need_x, need_m, border, align, projective, eps16,
                   groups):
    """Task ``t`` of :func:`warp_antialias_backward`: image ``t // groups``, its channel
    group ``t % groups``."""
    N, C, H, W = x.shape
    Ho, Wo = go.shape[2], go.shape[3]
    n = t // groups
    g = t - n * groups
    per = (C + groups - 1) // groups
    c0 = g * per
    c1 = min(C, c0 + per)
    if need_x:
        for c in range(c0, c1):
            gx[n, c] = 0.0
    if c1 <= c0:
        return
    xo, yo, sxu, syu, ox, oy = _geometry(H, W, Ho, Wo, align)
    mn = m[n]
    thresh = eps16 * (abs(mn[2, 0]) + abs(mn[2, 1]) + abs(mn[2, 2]))
    acc = np.zeros(9, np.float64)
    HW = H * W
    flat = x.reshape(N * C * HW)
    gflat = gx.reshape(gx.size)
    Wu = np.uint64(W)
    d = np.empty(c1 - c0, np.float64)  # dL / d(output) of the pixel, over its samples
    nq = c1 - c0
    base = np.uint64((n * C + c0) * HW)
    plane = np.uint64(HW)
    dxs = np.empty(MAX_SAMPLES, np.float64)  # the offsets of the points (_offsets)
    dys = np.empty(MAX_SAMPLES, np.float64)
    kx_table = ky_table = 0
    for i in range(Ho):
        for j in range(Wo):
            u, v = xo[j], yo[i]
            cx, cy, exx, exy, eyx, eyy, kx, ky = _pixel_footprint(mn, xo, yo, i, j, sxu, syu,
                                                                 projective, thresh)
            kx_table = _offsets(dxs, kx, kx_table)
            ky_table = _offsets(dys, ky, ky_table)
            scale = 1.0 / (kx * ky)
            for c in range(c0, c1):
                d[c - c0] = go[n, c, i, j] * scale
            gcx = gcy = gxx = gxy = gyx = gyy = 0.0  # G_c, G_x, G_y (normalised)
            if _inside(cx, cy, exx, exy, eyx, eyy, sxu, syu, ox, oy, H, W):
                # No clip, no padding: the general path's values without its checks.
                for b in range(ky):
                    dy = dys[b]
                    bx = cx + dy * eyx
                    by = cy + dy * eyy
                    for a in range(kx):
                        dx = dxs[a]
                        x0, tx, y0, ty = _interior_tap(bx, by, dx, exx, exy, sxu, syu, ox, oy)
                        k = base + np.uint64(y0 * W + x0)
                        dix = diy = 0.0
                        for q in range(nq):
                            dix, diy = _channel_grads(flat, gflat, k, Wu, tx, ty, d[q], need_x,
                                                      need_m, dix, diy)
                            k += plane
                        if need_m:
                            gcx, gcy, gxx, gxy, gyx, gyy = _add_point(
                                gcx, gcy, gxx, gxy, gyx, gyy, dix * sxu, diy * syu, dx, dy)
            else:
                for b in range(ky):
                    dy = dys[b]
                    bx = cx + dy * eyx
                    by = cy + dy * eyy
                    for a in range(kx):
                        dx = dxs[a]
                        x0, tx, okx, y0, ty, oky = _point_tap(bx, by, dx, exx, exy, sxu, syu,
                                                              ox, oy, H, W, border)
                        w00, w01, w10, w11 = _weights(tx, ty)
                        dix = diy = 0.0  # dL / d(pixel coordinate) of this point
                        if 0 <= x0 and x0 < W - 1 and 0 <= y0 and y0 < H - 1:
                            k = base + np.uint64(y0 * W + x0)
                            for q in range(nq):
                                dix, diy = _channel_grads(flat, gflat, k, Wu, tx, ty, d[q],
                                                          need_x, need_m, dix, diy)
                                k += plane
                        else:  # taps in the padding: value 0, no gradient
                            ok0, ok1 = 0 <= y0 < H, 0 <= y0 + 1 < H
                            okl, okr = 0 <= x0 < W, 0 <= x0 + 1 < W
                            for c in range(c0, c1):
                                dq = d[c - c0]
                                v00 = x[n, c, y0, x0] if ok0 and okl else 0.0
                                v01 = x[n, c, y0, x0 + 1] if ok0 and okr else 0.0
                                v10 = x[n, c, y0 + 1, x0] if ok1 and okl else 0.0
                                v11 = x[n, c, y0 + 1, x0 + 1] if ok1 and okr else 0.0
                                dix += dq * ((1.0 - ty) * (v01 - v00) + ty * (v11 - v10))
                                diy += dq * ((1.0 - tx) * (v10 - v00) + tx * (v11 - v01))
                                if need_x:
                                    if ok0 and okl:
                                        gx[n, c, y0, x0] += dq * w00
                                    if ok0 and okr:
                                        gx[n, c, y0, x0 + 1] += dq * w01
                                    if ok1 and okl:
                                        gx[n, c, y0 + 1, x0] += dq * w10
                                    if ok1 and okr:
                                        gx[n, c, y0 + 1, x0 + 1] += dq * w11
                        if need_m:
                            gcx, gcy, gxx, gxy, gyx, gyy = _add_point(
                                gcx, gcy, gxx, gxy, gyx, gyy, dix * okx * sxu, diy * oky * syu,
                                dx, dy)
            if not need_m:
                continue
            # The point is g(i, j) + dy * e_y + dx * e_x: G_c to the centre, G_x and G_y
            # to the grid points each edge is the difference of (antialias._steps).
            _chain(acc, mn, u, v, gcx, gcy, projective, thresh)
            if Wo > 1:
                ja, jb, a = _neighbours(j, Wo)
                _chain(acc, mn, xo[ja], v, gxx * a, gxy * a, projective, thresh)
                _chain(acc, mn, xo[jb], v, -gxx * a, -gxy * a, projective, thresh)
            if Ho > 1:
                ia, ib, a = _neighbours(i, Ho)
                _chain(acc, mn, u, yo[ia], gyx * a, gyy * a, projective, thresh)
                _chain(acc, mn, u, yo[ib], -gyx * a, -gyy * a, projective, thresh)
    if need_m:
        for q in range(9):
            gm[n, g, q // 3, q % 3] = acc[q]


@njit(parallel=True, cache=True)
def warp_antialias_backward(x, m, go, gx, gm, need_x, need_m, border, align, projective,
                            eps16, groups):
    """Gradients of :func:`warp_antialias_forward` for ``go``.

    gx: like x (written where need_x); gm: (N, groups, 3, 3) float64, zeros, each task's
    partial matrix gradient in its own slot. One task per (image, channel group).
    """
    for t in prange(x.shape[0] * groups):
        _backward_task(np.int64(t), x, m, go, gx, gm, need_x, need_m, border, align,
                       projective, eps16, groups)


@njit(cache=True)
def warp_antialias_backward_serial(x, m, go, gx, gm, need_x, need_m, border, align,
                                   projective, eps16, groups):
    """warp_antialias_backward on the calling thread."""
    for t in range(x.shape[0] * groups):
        _backward_task(t, x, m, go, gx, gm, need_x, need_m, border, align, projective,
                       eps16, groups)
