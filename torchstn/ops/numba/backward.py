"""The CPU backward kernel, ``warp_backward``, with its scatters and matrix-gradient sums.

A unit of work is an (image, group of ``CHANNEL_GROUP`` channels) pair: it alone writes
its channels' input gradient (a scatter: ``_scatter_chunk`` and the plane scatters
below), in a fixed order, and its partial matrix gradient goes to its own slot. The
coordinate gradient of each chunk is reduced to the matrix by ``_add_matrix_grad`` and
``_chunk_sums``, which the tiled backward (:mod:`torchstn.ops.numba.tiles`) shares.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .coords import (
    _INSIDE,
    _OUTSIDE,
    _PARTIAL,
    _PIXEL_MAJOR_CHANNELS,
    _SMALL_PLANE_BYTES,
    CHANNEL_GROUP,
    _base_coords,
    _chunking,
    _coords,
    _corner_values,
    _fill_rows,
    _footprint,
    _taps,
    _tiled,
)
from .prefetch import _prefetch_rows

__all__ = ["_add_matrix_grad", "_chunk_sums", "warp_backward", "warp_backward_serial"]


@njit(cache=True, fastmath={"reassoc"})
def _chunk_sums(d, XO, YO):
    """(sum(d * XO), sum(d * YO), sum(d)).

    Reassociation lets the compiler sum in vector lanes (a loop-carried float add
    otherwise costs its full latency per pixel). The order is then fixed by the compiled
    code: the same on every run and thread count, though not the left-to-right order.
    """
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    for j in range(d.shape[0]):
        s0 += d[j] * XO[j]
        s1 += d[j] * YO[j]
        s2 += d[j]
    return s0, s1, s2


@njit(inline="always", cache=True)
def _add_matrix_grad(acc, GIX, GIY, GX, GY, XS, YS, WS, DX, DY, DW, XO, YO, projective):
    """Add a chunk's matrix gradient to ``acc`` (9, row-major), from GIX, GIY: dL/d(pixel
    coordinate) of each sample. The chain rule to the matrix (Eq. 1: d(x, y) / d(matrix
    row) = (xo, yo, 1)); DX, DY, DW: scratch."""
    for j in range(DX.shape[0]):
        DX[j] = np.float64(GIX[j]) * GX[j]  # dL / d(normalised input x)
        DY[j] = np.float64(GIY[j]) * GY[j]
    if projective:
        for j in range(DX.shape[0]):  # through the division by w
            w = WS[j]
            dxn = DX[j]
            dyn = DY[j]
            DX[j] = dxn / w
            DY[j] = dyn / w
            DW[j] = -(dxn * XS[j] + dyn * YS[j]) / w
        rw0, rw1, rw2 = _chunk_sums(DW, XO, YO)
        acc[6] += rw0
        acc[7] += rw1
        acc[8] += rw2
    rx0, rx1, rx2 = _chunk_sums(DX, XO, YO)
    ry0, ry1, ry2 = _chunk_sums(DY, XO, YO)
    acc[0] += rx0
    acc[1] += rx1
    acc[2] += rx2
    acc[3] += ry0
    acc[4] += ry1
    acc[5] += ry2


@njit(parallel=True, cache=True)
def warp_backward(x, m, gout, gx, gm, need_x, need_m, nearest, border, align, projective,
                  eps16, f32, tasks, sink):
    """Gradients of warp_forward.

    gout: (N, C, Ho, Wo); gx: (N, C, H, W), overwritten when ``need_x``; gm:
    (N, G, 3, 3) float64 zeros, G = ceil(C / CHANNEL_GROUP), partial matrix gradients of
    each channel group, written when ``need_m`` (sum over G afterwards). The N * G
    (image, channel group) pairs are split into ``tasks`` contiguous runs, each with its
    scratch arrays (any split gives the same result). sink: (N * G,) float64, as in
    warp_forward.

    Each chunk of output rows goes through a pipeline of loops: coordinates and taps
    (vectorised), then per channel a scalar loop that only loads the four tap values and
    a vectorised loop that folds them into the chunk's coordinate gradient (channel
    groups of _PIXEL_MAJOR_CHANNELS or more: one pixel-major loop instead), then the
    chain rule to the matrix and the sums (``_chunk_sums``). The input gradient is a scatter, a
    scalar loop of its own.
    """
    for w in prange(tasks):  # scratch allocated once a run, reused by its pairs
        _backward_task(np.int64(w), x, m, gout, gx, gm, need_x, need_m, nearest, border, align,
                       projective, eps16, f32, tasks, sink)


@njit(cache=True)
def warp_backward_serial(x, m, gout, gx, gm, need_x, need_m, nearest, border, align, projective,
                  eps16, f32, tasks, sink):
    """warp_backward on the calling thread (small warps; forked processes)."""
    for w in range(tasks):
        _backward_task(w, x, m, gout, gx, gm, need_x, need_m, nearest, border, align,
                       projective, eps16, f32, tasks, sink)


@njit(cache=True)
def _backward_task(w, x, m, gout, gx, gm, need_x, need_m, nearest, border, align, projective,
                   eps16, f32, tasks, sink):
    """Task ``w`` of :func:`warp_backward`: the one compiled body that the parallel
    kernel and its serial copy call for each task (each body compiles once, not
    once per copy)."""
    N, C, H, W = x.shape
    Ho, Wo = gout.shape[2], gout.shape[3]
    G = (C + CHANNEL_GROUP - 1) // CHANNEL_GROUP
    xf = x.reshape(N, C, H * W)
    gof = gout.reshape(N, C, Ho * Wo)
    gxf = gx.reshape(gx.shape[0], gx.shape[1], gx.shape[2] * gx.shape[3])
    HW, HWo = H * W, Ho * Wo
    HWu, HWou = np.uint64(HW), np.uint64(HWo)
    flat_x = x.reshape(N * C * HW)
    flat_go = gout.reshape(N * C * HWo)
    flat_gx = gx.reshape(gx.size)
    coord_grad = need_m and not nearest
    xo = _base_coords(Wo, align, f32)
    yos = _base_coords(Ho, align, f32)
    chunk_rows, rows_per_block = _chunking(Ho, Wo, min(C, CHANNEL_GROUP))
    XO = _tiled(xo, chunk_rows)
    L = XO.shape[0]
    line = max(1, 64 // x.itemsize)
    prefetch = H * W * x.itemsize > _SMALL_PLANE_BYTES
    per = (N * G + tasks - 1) // tasks
    f64 = np.empty((11, L), np.float64)
    IX, IY, GX, GY = f64[0], f64[1], f64[2], f64[3]
    XS, YS, WS, DX, DY, DW, YO = f64[4], f64[5], f64[6], f64[7], f64[8], f64[9], f64[10]
    ints = np.empty((3, L), np.int64)
    K, X0, Y0 = ints[0], ints[1], ints[2]
    KIND = np.empty(L, np.int8)
    vals = np.empty((12, L), x.dtype)
    W00, W01, W10, W11, TX, TY = vals[0], vals[1], vals[2], vals[3], vals[4], vals[5]
    V00, V01, V10, V11, GIX, GIY = vals[6], vals[7], vals[8], vals[9], vals[10], vals[11]
    zero = np.zeros(1, x.dtype)[0]
    one_x = np.ones(1, x.dtype)[0]
    one = np.uint64(1)
    Wu = np.uint64(W)
    acc = np.zeros(9)  # the matrix gradient, row-major
    box = (0, 0, 0, 0)
    for t in range(w * per, min(N * G, (w + 1) * per)):
        n = t // G
        g = t - n * G
        c0 = g * CHANNEL_GROUP
        c1 = min(C, c0 + CHANNEL_GROUP)
        acc[:] = 0.0
        if need_x:
            gxf[n, c0:c1] = 0.0
        if prefetch:  # the columns the prefetch reads
            box = _footprint(m[n], xo[0], xo[Wo - 1], yos[0], yos[Ho - 1], H, W, align,
                             projective, eps16)
        touched = 0.0
        x_lo = gx_lo = 0
        x_hi = gx_hi = -1
        block_end = 0
        for i0 in range(0, Ho, chunk_rows):  # a chunk: rows i0..i0 + chunk_rows - 1, one run
            if i0 == block_end and prefetch:  # prefetch the rows the next block reads
                block_end = min(Ho, i0 + rows_per_block)
                _, _, lo, hi = _footprint(m[n], xo[0], xo[Wo - 1], yos[i0], yos[block_end - 1],
                                          H, W, align, projective, eps16)
                if coord_grad:
                    s, x_lo, x_hi = _prefetch_rows(xf[n], c0, c1, W, box, lo, hi, x_lo, x_hi,
                                                   line)
                    touched += s
                if need_x:
                    s, gx_lo, gx_hi = _prefetch_rows(gxf[n], c0, c1, W, box, lo, hi, gx_lo,
                                                     gx_hi, line)
                    touched += s
            base = i0 * Wo
            _fill_rows(YO, yos, i0, Wo)
            _coords(m[n], XO, YO, H, W, border, align, projective, eps16, coord_grad, f32,
                    IX, IY, GX, GY, XS, YS, WS)
            _taps(H, W, nearest, IX, IY, KIND, K, X0, Y0, TX, TY, W00, W01, W10, W11)
            if need_x:
                _scatter_chunk(gxf[n], gof[n], flat_gx, flat_go, n, C, c0, c1, base, H, W,
                             nearest, KIND, K, X0, Y0, W00, W01, W10, W11, zero)
            if not coord_grad:
                continue
            if c1 - c0 >= _PIXEL_MAJOR_CHANNELS:
                # Many channels: pixel-major, one sample's taps for the whole group, with
                # flat unsigned offsets stepped by a plane.
                for j in range(L):
                    kind = KIND[j]
                    tx, ty = TX[j], TY[j]
                    tx1, ty1 = one_x - tx, one_x - ty
                    gix = giy = zero
                    if kind == _INSIDE:
                        a = np.uint64((n * C + c0) * HW + K[j])
                        b = np.uint64((n * C + c0) * HWo + base + j)
                        for _ in range(c0, c1):
                            gv = flat_go[b]
                            v00, v01 = flat_x[a], flat_x[a + one]
                            v10, v11 = flat_x[a + Wu], flat_x[a + Wu + one]
                            gix += gv * ((v01 - v00) * ty1 + (v11 - v10) * ty)
                            giy += gv * ((v10 - v00) * tx1 + (v11 - v01) * tx)
                            a += HWu
                            b += HWou
                    elif kind == _PARTIAL:
                        for c in range(c0, c1):
                            gv = gof[n, c, base + j]
                            v00, v01, v10, v11, _, _, _, _ = _corner_values(
                                xf[n, c], j, H, W, K, X0, Y0, zero)
                            gix += gv * ((v01 - v00) * ty1 + (v11 - v10) * ty)
                            giy += gv * ((v10 - v00) * tx1 + (v11 - v01) * tx)
                    GIX[j] = gix
                    GIY[j] = giy
            else:
                GIX[:] = zero
                GIY[:] = zero
                for c in range(c0, c1):
                    src = xf[n, c]
                    grow = gof[n, c, base : base + L]
                    for j in range(L):  # loads only (scalar: gathers are no faster here)
                        kind = KIND[j]
                        if kind == _INSIDE:
                            k0 = np.uint64(K[j])
                            V00[j] = src[k0]
                            V01[j] = src[k0 + one]
                            V10[j] = src[k0 + Wu]
                            V11[j] = src[k0 + Wu + one]
                        elif kind == _OUTSIDE:
                            V00[j] = V01[j] = V10[j] = V11[j] = zero
                        else:
                            v00, v01, v10, v11, _, _, _, _ = _corner_values(src, j, H, W, K,
                                                                            X0, Y0, zero)
                            V00[j], V01[j], V10[j], V11[j] = v00, v01, v10, v11
                    for j in range(L):  # d(sample) / d(pixel coordinate), over channels
                        # Outside samples read no pixel: a NaN grad_out there stays out.
                        gv = grow[j] if KIND[j] != _OUTSIDE else zero
                        tx, ty = TX[j], TY[j]
                        GIX[j] += gv * ((V01[j] - V00[j]) * (one_x - ty)
                                        + (V11[j] - V10[j]) * ty)
                        GIY[j] += gv * ((V10[j] - V00[j]) * (one_x - tx)
                                        + (V11[j] - V01[j]) * tx)
            _add_matrix_grad(acc, GIX, GIY, GX, GY, XS, YS, WS, DX, DY, DW, XO, YO,
                             projective)
        sink[t] = touched
        if need_m:
            gm[n, g] = acc.reshape(3, 3)


@njit(inline="always", cache=True)
def _scatter_chunk(gxn, gon, flat_gx, flat_go, n, C, c0, c1, base, H, W, nearest, KIND, K, X0,
                 Y0, W00, W01, W10, W11, zero):
    """Add the gradient of a chunk, output samples base..base+K.shape[0]-1, to the input
    gradient planes c0..c1-1 of image n.

    gxn, gon: image n's planes (C, H * W) and (C, Ho * Wo); flat_gx, flat_go: the whole
    arrays, flat (the same memory).

    Pixel-major: successive read-modify-writes of one plane are a channel group's work
    apart, so they rarely wait on each other.
    """
    one = np.uint64(1)
    Wu = np.uint64(W)
    HW, HWo = gxn.shape[1], gon.shape[1]
    HWu, HWou = np.uint64(HW), np.uint64(HWo)
    if not nearest and c1 - c0 < _PIXEL_MAJOR_CHANNELS:
        if HW * gxn.itemsize <= _SMALL_PLANE_BYTES:
            for c in range(c0, c1):
                _scatter_plane_direct(gxn[c], gon[c], base, H, W, KIND, K, X0, Y0, W00, W01,
                                      W10, W11)
        else:
            for c in range(c0, c1):
                _scatter_plane(gxn[c], gon[c], base, H, W, KIND, K, X0, Y0, W00, W01, W10,
                               W11, zero)
        return
    for j in range(K.shape[0]):
        kind = KIND[j]
        if kind == _OUTSIDE:
            continue
        k = K[j]
        o = base + j
        if nearest:
            for c in range(c0, c1):
                gxn[c, k] += gon[c, o]
            continue
        w00, w01, w10, w11 = W00[j], W01[j], W10[j], W11[j]
        if kind == _INSIDE:
            # Flat unsigned offsets stepped by a plane: no per-channel index arithmetic
            # or negative-index wraparound.
            a = np.uint64(n * C * HW + c0 * HW + k)
            b = np.uint64(n * C * HWo + c0 * HWo + o)
            for _ in range(c0, c1):
                gv = flat_go[b]
                flat_gx[a] += w00 * gv
                flat_gx[a + one] += w01 * gv
                flat_gx[a + Wu] += w10 * gv
                flat_gx[a + Wu + one] += w11 * gv
                a += HWu
                b += HWou
        else:
            x0, y0 = X0[j], Y0[j]
            ok00 = (y0 >= 0) & (y0 < H) & (x0 >= 0) & (x0 < W)
            ok01 = (y0 >= 0) & (y0 < H) & (x0 + 1 >= 0) & (x0 + 1 < W)
            ok10 = (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 >= 0) & (x0 < W)
            ok11 = (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 + 1 >= 0) & (x0 + 1 < W)
            for c in range(c0, c1):
                gv = gon[c, o]
                if ok00:
                    gxn[c, k] += w00 * gv
                if ok01:
                    gxn[c, k + 1] += w01 * gv
                if ok10:
                    gxn[c, k + W] += w10 * gv
                if ok11:
                    gxn[c, k + W + 1] += w11 * gv


@njit(inline="always", cache=True)
def _scatter_plane(gxp, gop, base, H, W, KIND, K, X0, Y0, W00, W01, W10, W11, zero):
    """Bilinear scatter of a chunk, output samples base..base+K.shape[0]-1, into one
    input-gradient plane.

    Neighbouring samples usually share a tap column: the right column of sample j is the
    left column of sample j + 1. Read-modify-writes of the same address back to back
    wait on each other (store-to-load forwarding), so the right column's two values are
    carried in registers and added with the next sample's left column (or written when
    the next sample does not continue there). Additions happen in a fixed order.
    """
    Wu = np.uint64(W)
    pend = -1  # flat index of the carried column's top pixel; -1: nothing carried
    pa = pb = zero
    for j in range(K.shape[0]):
        kind = KIND[j]
        if kind == _OUTSIDE:
            continue
        k = K[j]
        gv = gop[base + j]
        if kind == _INSIDE:
            v00 = W00[j] * gv
            v01 = W01[j] * gv
            v10 = W10[j] * gv
            v11 = W11[j] * gv
            if k == pend:  # the carried column is this sample's left column
                v00 += pa
                v10 += pb
            elif k + 1 == pend:  # ... or its right column (a magnified row)
                v01 += pa
                v11 += pb
            elif pend >= 0:
                pu = np.uint64(pend)
                gxp[pu] += pa
                gxp[pu + Wu] += pb
            k0 = np.uint64(k)
            gxp[k0] += v00
            gxp[k0 + Wu] += v10
            pend, pa, pb = k + 1, v01, v11
            continue
        if pend >= 0:  # a partial sample: settle the carried column first
            pu = np.uint64(pend)
            gxp[pu] += pa
            gxp[pu + Wu] += pb
            pend = -1
        _scatter_partial(gxp, gv, k, X0[j], Y0[j], H, W, W00[j], W01[j], W10[j], W11[j])
    if pend >= 0:
        pu = np.uint64(pend)
        gxp[pu] += pa
        gxp[pu + Wu] += pb


@njit(inline="always", cache=True)
def _scatter_plane_direct(gxp, gop, base, H, W, KIND, K, X0, Y0, W00, W01, W10, W11):
    """_scatter_plane for planes that fit the L1 cache: each sample adds to its four taps
    in place. Its extra read-modify-writes cost less there than the carry's branches,
    which mispredict wherever the tap column does not advance by one (8% faster on
    28 x 28 and 42 x 42 planes, 10% slower on 224 x 224)."""
    Wu = np.uint64(W)
    one = np.uint64(1)
    for j in range(K.shape[0]):
        kind = KIND[j]
        if kind == _INSIDE:
            gv = gop[base + j]
            k0 = np.uint64(K[j])
            gxp[k0] += W00[j] * gv
            gxp[k0 + one] += W01[j] * gv
            gxp[k0 + Wu] += W10[j] * gv
            gxp[k0 + Wu + one] += W11[j] * gv
        elif kind == _PARTIAL:
            _scatter_partial(gxp, gop[base + j], K[j], X0[j], Y0[j], H, W, W00[j], W01[j],
                             W10[j], W11[j])


@njit(inline="always", cache=True)
def _scatter_partial(gxp, gv, k, x0, y0, H, W, w00, w01, w10, w11):
    """Add a _PARTIAL sample's gradient ``gv`` to those of its taps inside the plane."""
    if (y0 >= 0) & (y0 < H) & (x0 >= 0) & (x0 < W):
        gxp[k] += w00 * gv
    if (y0 >= 0) & (y0 < H) & (x0 + 1 >= 0) & (x0 + 1 < W):
        gxp[k + 1] += w01 * gv
    if (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 >= 0) & (x0 < W):
        gxp[k + W] += w10 * gv
    if (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 + 1 >= 0) & (x0 + 1 < W):
        gxp[k + W + 1] += w11 * gv
