"""The CPU forward kernel, ``warp_forward``: bilinear or nearest, any number of channels.

The backend runs it for nearest sampling, and for bilinear warps of fewer channels than
a tile holds (16 float32, 8 float64; from there on :mod:`torchstn.ops.numba.tiles`). Each
chunk of output rows is a pipeline of short loops: coordinates and taps (vectorised),
then the tap loads and the arithmetic, plane by plane, or sample by sample over blocks of
channels from ``_PIXEL_MAJOR_CHANNELS`` channels on. Each output value is written by one
task.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .coords import (
    _CHANNEL_BLOCK,
    _INSIDE,
    _OUTSIDE,
    _PIXEL_MAJOR_CHANNELS,
    _SMALL_PLANE_BYTES,
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

__all__ = ["warp_forward", "warp_forward_serial"]


@njit(parallel=True, cache=True)
def warp_forward(x, m, out, nearest, border, align, projective, eps16, tasks, f32, sink):
    """out[n, c, i, j] = x[n, c] sampled at the input point of output pixel (i, j).

    x: (N, C, H, W); m: (N, 3, 3) float64; out: (N, C, Ho, Wo), same dtype as x. The
    N * Ho output rows, in chunks (see _chunking), are split into ``tasks`` contiguous
    runs (any split gives the same result). sink: (tasks,) float64, receives the sums of
    the prefetch reads (so that they are not optimised away; the values mean nothing).
    """
    for t in prange(tasks):  # (prange's index is unsigned: cast, one body)
        _forward_task(np.int64(t), x, m, out, nearest, border, align, projective, eps16, tasks, f32,
                      sink)


@njit(cache=True)
def warp_forward_serial(x, m, out, nearest, border, align, projective, eps16, tasks, f32, sink):
    """warp_forward on the calling thread (small warps; forked processes)."""
    for t in range(tasks):
        _forward_task(t, x, m, out, nearest, border, align, projective, eps16, tasks, f32,
                      sink)


@njit(cache=True)
def _forward_task(t, x, m, out, nearest, border, align, projective, eps16, tasks, f32, sink):
    """Task ``t`` of :func:`warp_forward`: the one compiled body that the parallel
    kernel and its serial copy call for each task (each body compiles once, not
    once per copy)."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    xf = x.reshape(N, C, H * W)
    of = out.reshape(N, C, Ho * Wo)
    HW, HWo = H * W, Ho * Wo
    HWu, HWou = np.uint64(HW), np.uint64(HWo)
    flat_x = x.reshape(N * C * HW)
    flat_out = out.reshape(N * C * HWo)
    xo = _base_coords(Wo, align, f32)
    yos = _base_coords(Ho, align, f32)
    chunk_rows, rows_per_block = _chunking(Ho, Wo, C)
    XO = _tiled(xo, chunk_rows)
    L = XO.shape[0]
    chunks = N * (Ho // chunk_rows)
    per = (chunks + tasks - 1) // tasks
    line = max(1, 64 // x.itemsize)
    prefetch = H * W * x.itemsize > _SMALL_PLANE_BYTES
    f64 = np.empty((7, L), np.float64)
    IX, IY, TX, TY, GX, GY, YO = f64[0], f64[1], f64[2], f64[3], f64[4], f64[5], f64[6]
    ints = np.empty((3, L), np.int64)
    K, X0, Y0 = ints[0], ints[1], ints[2]
    KIND = np.empty(L, np.int8)
    wts = np.empty((4, L), x.dtype)
    W00, W01, W10, W11 = wts[0], wts[1], wts[2], wts[3]
    zero = np.zeros(1, x.dtype)[0]
    one = np.uint64(1)
    Wu = np.uint64(W)
    r_end = min(chunks, (t + 1) * per) * chunk_rows
    touched = 0.0
    n_cur = -1
    last = block_end = done_lo = done_hi = 0
    box = (0, 0, 0, 0)
    r = t * per * chunk_rows
    while r < r_end:
        n = r // Ho
        i = r - n * Ho
        if n != n_cur:  # this task's first row of image n: its columns, nothing touched
            n_cur = n
            last = min(Ho, r_end - n * Ho) - 1
            if prefetch:  # the columns the prefetch reads
                box = _footprint(m[n], xo[0], xo[Wo - 1], yos[i], yos[last], H, W, align,
                                 projective, eps16)
            block_end, done_lo, done_hi = i, 0, -1
        if i == block_end and prefetch:  # prefetch the input rows of the next block
            block_end = min(last + 1, i + rows_per_block)
            _, _, lo, hi = _footprint(m[n], xo[0], xo[Wo - 1], yos[i], yos[block_end - 1],
                                      H, W, align, projective, eps16)
            s, done_lo, done_hi = _prefetch_rows(xf[n], 0, C, W, box, lo, hi, done_lo,
                                                 done_hi, line)
            touched += s
        r += chunk_rows  # a chunk: output rows i..i + chunk_rows - 1, as one run
        _fill_rows(YO, yos, i, Wo)
        _coords(m[n], XO, YO, H, W, border, align, projective, eps16, False, f32,
                IX, IY, GX, GY, GX, GX, GX)
        _taps(H, W, nearest, IX, IY, KIND, K, X0, Y0, TX, TY, W00, W01, W10, W11)
        base = i * Wo
        if C >= _PIXEL_MAJOR_CHANNELS and not nearest:
            # Many channels: each sample's taps serve a block of channels (blocks keep
            # the planes in use few enough for the L1 cache, whatever the strides).
            xn = xf[n]
            on = of[n]
            for cb in range(0, C, _CHANNEL_BLOCK):
                ce = min(C, cb + _CHANNEL_BLOCK)
                for j in range(L):
                    kind = KIND[j]
                    k = K[j]
                    o = base + j
                    if kind == _INSIDE:
                        w00, w01, w10, w11 = W00[j], W01[j], W10[j], W11[j]
                        # Flat unsigned offsets stepped by a plane: no per-channel
                        # index arithmetic or negative-index wraparound (1.6x faster).
                        a = np.uint64((n * C + cb) * HW + k)
                        b = np.uint64((n * C + cb) * HWo + o)
                        for _ in range(cb, ce):
                            flat_out[b] = (w00 * flat_x[a] + w01 * flat_x[a + one]
                                           + w10 * flat_x[a + Wu]
                                           + w11 * flat_x[a + Wu + one])
                            a += HWu
                            b += HWou
                    elif kind == _OUTSIDE:
                        for c in range(cb, ce):
                            on[c, o] = 0.0
                    else:
                        x0, y0 = X0[j], Y0[j]
                        ok00 = 0 <= y0 < H and 0 <= x0 < W
                        ok01 = 0 <= y0 < H and 0 <= x0 + 1 < W
                        ok10 = 0 <= y0 + 1 < H and 0 <= x0 < W
                        ok11 = 0 <= y0 + 1 < H and 0 <= x0 + 1 < W
                        w00, w01, w10, w11 = W00[j], W01[j], W10[j], W11[j]
                        for c in range(cb, ce):
                            acc = zero
                            if ok00:
                                acc += w00 * xn[c, k]
                            if ok01:
                                acc += w01 * xn[c, k + 1]
                            if ok10:
                                acc += w10 * xn[c, k + W]
                            if ok11:
                                acc += w11 * xn[c, k + W + 1]
                            on[c, o] = acc
            continue
        for c in range(C):
            src = xf[n, c]
            dst = of[n, c, base : base + L]
            if nearest:
                for j in range(L):
                    dst[j] = src[K[j]] if KIND[j] == _INSIDE else 0.0
                continue
            for j in range(L):
                kind = KIND[j]
                k = K[j]
                if kind == _INSIDE:
                    # Unsigned indices: Numba then skips its negative-index wraparound.
                    k0 = np.uint64(k)
                    dst[j] = (W00[j] * src[k0] + W01[j] * src[k0 + one]
                              + W10[j] * src[k0 + Wu] + W11[j] * src[k0 + Wu + one])
                elif kind == _OUTSIDE:
                    dst[j] = 0.0
                else:
                    v00, v01, v10, v11, _, _, _, _ = _corner_values(
                        src, j, H, W, K, X0, Y0, zero)
                    dst[j] = W00[j] * v00 + W01[j] * v01 + W10[j] * v10 + W11[j] * v11
    sink[t] = touched
