"""Fused CPU warp kernels (Numba): sample coordinates are computed from the matrix per pixel.

Neither the (N, H, W, 2) sampling grid nor its gradient is ever written to memory. Every
function here trusts its inputs (C-contiguous float32/float64 arrays of the right shapes);
:mod:`torchstn._numba_backend` validates and dispatches.

Coordinates follow :func:`torchstn.grids.affine_grid` / :func:`torchstn.grids.projective_grid`
and :func:`torch.nn.functional.grid_sample`, computed in float64 whatever the image dtype.

Speed, measured on a 2-core Zen 4 VM (see ``benchmarks/bench_sampler.py``):

- output rows are taken in chunks of whole rows (about _CHUNK samples), and each chunk
  is a pipeline of short loops over scratch arrays: coordinates and taps
  (vectorised), then the tap loads (scalar: AVX-512 gathers are no faster there), then
  the arithmetic on the loaded values (vectorised);
- the input rows a block of output rows reads are first read row by row (``_touch``):
  the diagonal walk of a rotated warp defeats the hardware prefetcher, and this halves
  the forward time of large images;
- the many-channel loops step flat unsigned offsets by a plane (no per-access index
  arithmetic or negative-index wraparound);
- from a full vector of channels on (16 float32, 8 float64), bilinear warps run on
  tiles: channels transposed next to each other, a tap one vector load
  (``warp_forward_tiles``, ``warp_backward_tiles``; see the section "Tiles" below).

Determinism: the forward pass writes each output value from one task. In the backward
pass one unit of work is an (image, group of ``CHANNEL_GROUP`` channels, or of
``tile_lanes`` on tiles) pair: it alone writes its
channels' input gradient, in a fixed order, and its partial matrix gradient goes to its
own slot; the slots are summed in a fixed order afterwards. Chunk sums are reassociated
by the compiler (``_chunk_sums``), into an order fixed by the compiled code. Nothing
depends on the thread count or on scheduling, so results are bit-identical run to run.
"""

from __future__ import annotations

import types

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as nbtypes
from numba.extending import intrinsic

CHANNEL_GROUP = 16
_FAR = 1.0e4  # torchstn.grids.FAR


# Tap kinds of an output pixel (bilinear: its 2x2 input neighbourhood; nearest: 1 pixel).
_OUTSIDE, _INSIDE, _PARTIAL = 0, 1, 2
# From this many channels on, the forward pass loops over channels inside each sample,
# in blocks of _CHANNEL_BLOCK channels (measured best on a Zen 4 core, 56x56x64 images).
_PIXEL_MAJOR_CHANNELS = 8
_CHANNEL_BLOCK = 32
# Input rows are prefetched (see _touch) a block of output rows at a time, blocks of
# about this many values (samples x channels).
_BLOCK_VALUES = 16384
# Planes up to this size (a third of a 32 KiB L1 data cache) take the direct scatter
# (_scatter_plane_direct) and are not prefetched (_touch): they stay in the caches anyway,
# and skipping the prefetch made 28 x 28 and 42 x 42 warps 3-6% faster.
_SMALL_PLANE_BYTES = 12 << 10
# Output rows are processed in chunks of whole rows, at most this many samples (one row
# if wider): every scratch loop then runs long enough to pay for its set-up. At 28x28
# this made the forward and backward passes 1.15x faster than rows one at a time, and
# the backward without an input gradient 1.25x (2 threads, min of 21).
_CHUNK = 256


@njit(cache=True)
def _base_coords(n, align, f32):
    """The ``n`` normalised pixel-centre coordinates (as torchstn.grids._coords).

    ``f32``: rounded as PyTorch computes them in float32 (``(2k + 1) / n - 1``, and
    ``torch.linspace``'s two-sided formula), so that nearest-neighbour ties break the
    same way as on the reference path.
    """
    out = np.empty(n, np.float64)
    for k in range(n):
        if align:
            if n == 1:
                out[k] = 0.0
            elif f32:
                step = np.float32(np.float32(2.0) / np.float32(n - 1))
                if k < n // 2:
                    out[k] = np.float32(np.float32(-1.0) + np.float32(step * np.float32(k)))
                else:
                    out[k] = np.float32(np.float32(1.0)
                                        - np.float32(step * np.float32(n - 1 - k)))
            else:
                out[k] = -1.0 + 2.0 * k / (n - 1)
        elif f32:
            out[k] = np.float32(np.float32(np.float32(2 * k + 1) / np.float32(n))
                                - np.float32(1.0))
        else:
            out[k] = (2.0 * k + 1.0) / n - 1.0
    return out


class _Chunk:  # documentation only: the per-chunk scratch arrays, all of the chunk's length
    """IX, IY: input pixel coordinates. GX, GY: d(pixel)/d(normalised coordinate), 0
    where the coordinate does not depend on the matrix (border-clipped, behind the
    horizon, clamped to +-FAR). XO, YO: normalised output point. XS, YS, WS: normalised
    input point and homogeneous w
    (projective chain rule). KIND: _OUTSIDE / _INSIDE / _PARTIAL. K: flat index of the
    top-left tap. X0, Y0: its column and row. TX, TY: bilinear fractions. W00..W11: tap
    weights in the image dtype."""


@njit(inline="always", cache=True)
def _coords(m, XO, YO, H, W, border, align, projective, eps16, grads, f32,
            IX, IY, GX, GY, XS, YS, WS):
    """Input pixel coordinates of a chunk of output samples, as one run (paper, Eq. 1,
    then unnormalised). XO, YO: each sample's normalised output point (see _tiled and
    _fill_rows).

    ``f32``: round the normalised point and the pixel coordinate to float32 as the
    reference path does (its grid, then grid_sample's fused multiply-add), for nearest
    sampling, where a rounding tie decides which pixel is read.
    """
    # grid_sample's unnormalisation, written as one multiply-add:
    # align_corners: (x + 1) / 2 * (W - 1); else ((x + 1) * W - 1) / 2.
    sx = 0.5 * (W - 1) if align else 0.5 * W
    sy = 0.5 * (H - 1) if align else 0.5 * H
    ox = 0.5 * (W - 1)
    oy = 0.5 * (H - 1)
    L = IX.shape[0]
    m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
    m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
    m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
    # Each sample is m00 * x + (m01 * y + m02): the rounding of a per-row constant.
    if not projective:
        if f32:
            for j in range(L):
                x = np.float64(np.float32(m00 * XO[j] + (m01 * YO[j] + m02)))
                y = np.float64(np.float32(m10 * XO[j] + (m11 * YO[j] + m12)))
                IX[j] = np.float32(x * sx + ox)
                IY[j] = np.float32(y * sy + oy)
        else:
            for j in range(L):
                IX[j] = (m00 * XO[j] + (m01 * YO[j] + m02)) * sx + ox
                IY[j] = (m10 * XO[j] + (m11 * YO[j] + m12)) * sy + oy
        if grads:
            for j in range(L):
                GX[j] = sx
                GY[j] = sy
    else:
        # Points with w <= eps16 * (|m20| + |m21| + |m22|) are at or behind the horizon.
        thresh = eps16 * (abs(m20) + abs(m21) + abs(m22))
        for j in range(L):
            w = m20 * XO[j] + (m21 * YO[j] + m22)
            gx_ok, gy_ok = sx, sy
            if w > thresh:
                x = (m00 * XO[j] + (m01 * YO[j] + m02)) / w
                y = (m10 * XO[j] + (m11 * YO[j] + m12)) / w
                if x > _FAR:
                    x, gx_ok = _FAR, 0.0
                elif x < -_FAR:
                    x, gx_ok = -_FAR, 0.0
                if y > _FAR:
                    y, gy_ok = _FAR, 0.0
                elif y < -_FAR:
                    y, gy_ok = -_FAR, 0.0
            else:
                x, y, w, gx_ok, gy_ok = _FAR, _FAR, 1.0, 0.0, 0.0
            if f32:
                IX[j] = np.float32(np.float64(np.float32(x)) * sx + ox)
                IY[j] = np.float32(np.float64(np.float32(y)) * sy + oy)
            else:
                IX[j] = x * sx + ox
                IY[j] = y * sy + oy
            if grads:
                GX[j] = gx_ok
                GY[j] = gy_ok
                XS[j] = x
                YS[j] = y
                WS[j] = w
    if border:  # as grid_sample's clip_coordinates_set_grad; NaN goes to 0
        for j in range(IX.shape[0]):
            p = IX[j]
            keep = (p > 0.0) & (p < W - 1)
            IX[j] = p if keep else (0.0 if not p > 0.0 else W - 1.0)
            GX[j] = GX[j] if keep else 0.0
            p = IY[j]
            keep = (p > 0.0) & (p < H - 1)
            IY[j] = p if keep else (0.0 if not p > 0.0 else H - 1.0)
            GY[j] = GY[j] if keep else 0.0


@njit(inline="always", cache=True)
def _taps(H, W, nearest, IX, IY, KIND, K, X0, Y0, TX, TY, W00, W01, W10, W11):
    """Classify each sample and compute its taps (see _Chunk); branch-free, so it vectorises."""
    # Coordinates beyond [-2, size + 1] read only padding; clamping them there keeps the
    # integer conversion defined (NaN goes to -2, also padding).
    lo = -2.0
    hi_x = W + 1.0
    hi_y = H + 1.0
    if nearest:
        for j in range(IX.shape[0]):
            ix = min(max(IX[j], lo), hi_x) if IX[j] == IX[j] else lo
            iy = min(max(IY[j], lo), hi_y) if IY[j] == IY[j] else lo
            xn = int(np.rint(ix))  # round half to even, as grid_sample's nearbyint
            yn = int(np.rint(iy))
            inside = (xn >= 0) & (xn < W) & (yn >= 0) & (yn < H)
            KIND[j] = _INSIDE if inside else _OUTSIDE
            K[j] = yn * W + xn
        return
    for j in range(IX.shape[0]):
        ix = min(max(IX[j], lo), hi_x) if IX[j] == IX[j] else lo
        iy = min(max(IY[j], lo), hi_y) if IY[j] == IY[j] else lo
        x0f = np.floor(ix)
        y0f = np.floor(iy)
        tx = ix - x0f
        ty = iy - y0f
        x0 = int(x0f)
        y0 = int(y0f)
        X0[j] = x0
        Y0[j] = y0
        K[j] = y0 * W + x0
        TX[j] = tx
        TY[j] = ty
        W00[j] = (1.0 - tx) * (1.0 - ty)
        W01[j] = tx * (1.0 - ty)
        W10[j] = (1.0 - tx) * ty
        W11[j] = tx * ty
        inside = (x0 >= 0) & (x0 < W - 1) & (y0 >= 0) & (y0 < H - 1)
        outside = (x0 < -1) | (x0 >= W) | (y0 < -1) | (y0 >= H)
        KIND[j] = _INSIDE if inside else (_OUTSIDE if outside else _PARTIAL)


@njit(inline="always", cache=True)
def _corner_values(src, j, H, W, K, X0, Y0, zero):
    """The 4 bilinear tap values of a _PARTIAL sample, 0 for taps in the padding."""
    k, x0, y0 = K[j], X0[j], Y0[j]
    in_x0 = 0 <= x0 < W
    in_x1 = 0 <= x0 + 1 < W
    in_y0 = 0 <= y0 < H
    in_y1 = 0 <= y0 + 1 < H
    v00 = src[k] if (in_y0 and in_x0) else zero
    v01 = src[k + 1] if (in_y0 and in_x1) else zero
    v10 = src[k + W] if (in_y1 and in_x0) else zero
    v11 = src[k + W + 1] if (in_y1 and in_x1) else zero
    return v00, v01, v10, v11, in_x0, in_x1, in_y0, in_y1


@njit(cache=True)
def _chunking(Ho, Wo, C):
    """(chunk_rows, rows_per_block): output rows per chunk, the largest divisor of Ho
    with at most _CHUNK samples, and per prefetch block, a multiple of it with about
    _BLOCK_VALUES values for C channels.

    Every chunk is then whole, so every scratch loop runs over its arrays' full length,
    rows of one 2-D allocation: the compiler proves them disjoint and vectorises without
    run-time overlap checks (loops over a prefix of the arrays measured 5-15% slower).
    """
    chunk_rows = 1
    for d in range(2, min(Ho, _CHUNK // Wo) + 1):
        if Ho % d == 0 and d * Wo * C <= _BLOCK_VALUES:
            chunk_rows = d
    rows_per_block = max(1, _BLOCK_VALUES // (Wo * C)) // chunk_rows * chunk_rows
    return chunk_rows, max(chunk_rows, rows_per_block)


@njit(cache=True)
def _tiled(xo, reps):
    """``xo`` repeated ``reps`` times: the x coordinate of each sample of a chunk."""
    Wo = xo.shape[0]
    XO = np.empty(reps * Wo, np.float64)
    for q in range(reps):
        XO[q * Wo : (q + 1) * Wo] = xo
    return XO


@njit(inline="always", cache=True)
def _fill_rows(YO, yos, i, Wo):
    """YO: the normalised y of each sample of the chunk of output rows from row i."""
    for q in range(YO.shape[0] // Wo):
        YO[q * Wo : (q + 1) * Wo] = yos[i + q]


@njit(cache=True)
def _footprint(m, xa, xb, ya, yb, H, W, align, projective, eps16):
    """Input pixels that output points in [xa, xb] x [ya, yb] (normalised) can read.

    Returns the inclusive box (x_lo, x_hi, y_lo, y_hi), clamped to the image and widened
    by a pixel for bilinear taps and rounding. An affine map sends the output rectangle
    to a parallelogram, a projective one with ``w > 0`` at all four corners (so
    everywhere between them) to a convex quadrilateral: either way the corners bound it.
    Anything else (a corner at or behind the horizon, a non-finite matrix) gives the
    whole image. Used to prefetch and to size the forward pass's tiles; it never decides
    a value.
    """
    sx = 0.5 * (W - 1) if align else 0.5 * W
    sy = 0.5 * (H - 1) if align else 0.5 * H
    ox = 0.5 * (W - 1)
    oy = 0.5 * (H - 1)
    thresh = eps16 * (abs(m[2, 0]) + abs(m[2, 1]) + abs(m[2, 2]))
    x_lo = y_lo = np.inf
    x_hi = y_hi = -np.inf
    for corner in range(4):
        u = xa if corner & 1 == 0 else xb
        v = ya if corner < 2 else yb
        px = m[0, 0] * u + m[0, 1] * v + m[0, 2]
        py = m[1, 0] * u + m[1, 1] * v + m[1, 2]
        if projective:
            w = m[2, 0] * u + m[2, 1] * v + m[2, 2]
            if not w > thresh:
                return 0, W - 1, 0, H - 1
            px /= w
            py /= w
        ix = px * sx + ox
        iy = py * sy + oy
        x_lo, x_hi = min(x_lo, ix), max(x_hi, ix)
        y_lo, y_hi = min(y_lo, iy), max(y_hi, iy)
    if not (np.isfinite(x_lo) and np.isfinite(x_hi) and np.isfinite(y_lo)
            and np.isfinite(y_hi)):
        return 0, W - 1, 0, H - 1
    # Clamped in floating point first: converting an out-of-range float is undefined.
    x_lo = min(max(x_lo, -2.0), W + 1.0)
    x_hi = min(max(x_hi, -2.0), W + 1.0)
    y_lo = min(max(y_lo, -2.0), H + 1.0)
    y_hi = min(max(y_hi, -2.0), H + 1.0)
    return (max(0, int(np.floor(x_lo)) - 1), min(W - 1, int(np.floor(x_hi)) + 2),
            max(0, int(np.floor(y_lo)) - 1), min(H - 1, int(np.floor(y_hi)) + 2))


@njit(cache=True)
def _touch(planes, c0, c1, W, x_lo, x_hi, y_lo, y_hi, step):
    """Read one value per cache line of rows y_lo..y_hi, columns x_lo..x_hi, of planes
    c0..c1-1 of ``planes`` (C, H * W), and return their sum (for a sink).

    Bilinear taps of a rotated or sheared warp walk the input diagonally, which the
    hardware prefetcher does not follow: every new cache line is a miss to memory. Read
    row by row first, the same lines arrive at streaming speed (3.4 -> 1.4 ns per
    sample on a 224 x 224 plane).
    """
    s = 0.0
    for c in range(c0, c1):
        for y in range(y_lo, y_hi + 1):
            row = y * W
            for q in range(row + x_lo, row + x_hi + 1, step):
                s += planes[c, q]
            s += planes[c, row + x_hi]
    return s


@njit(cache=True)
def _prefetch_rows(planes, c0, c1, W, box, need_lo, need_hi, done_lo, done_hi, step):
    """Touch (see _touch) the rows of need_lo..need_hi not in done_lo..done_hi, with the
    columns of ``box``; return the sum and the new done interval (empty: lo > hi)."""
    x_lo, x_hi = box[0], box[1]
    s = 0.0
    if done_lo > done_hi or need_hi < done_lo - 1 or need_lo > done_hi + 1:
        # Nothing touched yet, or a gap between the two: start the interval afresh (their
        # union would count the gap's rows as touched).
        s += _touch(planes, c0, c1, W, x_lo, x_hi, need_lo, need_hi, step)
        return s, need_lo, need_hi
    if need_lo < done_lo:
        s += _touch(planes, c0, c1, W, x_lo, x_hi, need_lo, min(need_hi, done_lo - 1), step)
    if need_hi > done_hi:
        s += _touch(planes, c0, c1, W, x_lo, x_hi, max(need_lo, done_hi + 1), need_hi, step)
    return s, min(need_lo, done_lo), max(need_hi, done_hi)


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
def warp_forward(x, m, out, nearest, border, align, projective, eps16, tasks, f32, sink):
    """out[n, c, i, j] = x[n, c] sampled at the input point of output pixel (i, j).

    x: (N, C, H, W); m: (N, 3, 3) float64; out: (N, C, Ho, Wo), same dtype as x. The
    N * Ho output rows, in chunks (see _chunking), are split into ``tasks`` contiguous
    runs (any split gives the same result). sink: (tasks,) float64, receives the sums of
    the prefetch reads (so that they are not optimised away; the values mean nothing).
    """
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
    for t in prange(tasks):
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
    for w in prange(tasks):  # scratch allocated once a run, reused by its pairs
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


# Tiles: many channels, a vector of channels per pixel ---------------------------------
#
# From a full vector of channels on, bilinear warps run on tiles: a channel group of V
# (one 64-byte vector: 16 float32 or 8 float64 channels, tile_lanes) is transposed to
# pixel-major order, each pixel's channels one vector, with a ring of zero pixels around
# the image. A tap is then one vector load, a sample's four taps serve its V channels in
# a few vector instructions, and taps in the zero ring need no bounds checks (their weights meet
# zeros, as grid_sample's skipped taps). The transposes are V x V blocks shuffled in
# registers (_transpose_block: 0.1 ns a value here, 3x a scalar loop). On 32 x 64 x 56 x
# 56 float32 images this made the forward pass 2x faster and the backward 2x (no input
# gradient) to 2.6x (2 threads). Below a full vector of channels the lanes idle and the
# other kernels win (measured: 12 channels even, 8 channels 1.5x slower).
#
# The vector code is LLVM IR written by the intrinsics below (Numba does not expose
# vector types); on machines with narrower vectors LLVM splits each operation. No fast-
# math flags: every operation rounds as written, lane sums in a fixed order.

_VECTOR_BYTES = 64


@njit(cache=True)
def tile_lanes(itemsize):
    """Channels per tile (one vector) for an image dtype of ``itemsize`` bytes."""
    return _VECTOR_BYTES // itemsize


def _transpose_network(V):
    """The shuffles of a V x V transpose, V a power of two: log2(V) stages, each a list of
    (new row, first source row, second source row, mask). Stage b swaps bit b of the row
    index with bit b of the column index."""
    stages = []
    b = 1
    while b < V:
        stage = []
        for r0 in range(V):
            if r0 & b:
                continue
            r1 = r0 | b
            for new in (r0, r1):
                mask = []
                for c in range(V):
                    src_row = (new & ~b) | (c & b)
                    src_col = (c & ~b) | (new & b)
                    mask.append(src_col + (V if src_row == r1 else 0))
                stage.append((new, r0, r1, mask))
        stages.append(stage)
        b <<= 1
    return stages


def _lanes_of(dtype):
    return _VECTOR_BYTES // (dtype.bitwidth // 8)


def _pointer(context, builder, arrty, arr, index, V):
    """Pointer to the V-lane vector at ``arr[index]`` (``index``: i64 value)."""
    data = context.make_array(arrty)(context, builder, arr).data
    vty = ir.VectorType(context.get_data_type(arrty.dtype), V)
    return builder.bitcast(builder.gep(data, [index]), vty.as_pointer())


def _index(context, builder, sig, args, k):
    return context.cast(builder, args[k], sig.args[k], nbtypes.int64)


def _scalar(context, builder, sig, args, k, dtype, V):
    """Argument k cast to ``dtype`` and splatted over V lanes."""
    v = context.cast(builder, args[k], sig.args[k], dtype)
    vty = ir.VectorType(v.type, V)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), V), [0] * V))


@intrinsic
def _transpose_block(typingctx, src, s_off, s_stride, dst, d_off, d_stride):
    """dst[d_off + c * d_stride + r] = src[s_off + r * s_stride + c] for r, c < V, the
    lane count (64 bytes of the dtype): a V x V block transposed in registers."""
    dtype = src.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        so, ss = _index(context, builder, sig, args, 1), _index(context, builder, sig, args, 2)
        do, ds = _index(context, builder, sig, args, 4), _index(context, builder, sig, args, 5)
        i64 = ir.IntType(64)
        rows = []
        for r in range(V):
            at = builder.add(so, builder.mul(ss, ir.Constant(i64, r)))
            rows.append(builder.load(_pointer(context, builder, sig.args[0], args[0], at, V),
                                     align=align))
        mty = ir.VectorType(ir.IntType(32), V)
        for stage in _transpose_network(V):
            new = [None] * V
            for row, r0, r1, mask in stage:
                new[row] = builder.shuffle_vector(rows[r0], rows[r1], ir.Constant(mty, mask))
            rows = new
        for c in range(V):
            at = builder.add(do, builder.mul(ds, ir.Constant(i64, c)))
            builder.store(rows[c], _pointer(context, builder, sig.args[3], args[3], at, V),
                          align=align)
        return context.get_dummy_value()

    return nbtypes.none(src, s_off, s_stride, dst, d_off, d_stride), codegen


def _taps4(context, builder, sig, args, V, align):
    """The four tap vectors at xt[q], xt[q + V], xt[q + dy], xt[q + dy + V] (args 0..2)."""
    q = _index(context, builder, sig, args, 1)
    dy = _index(context, builder, sig, args, 2)
    step = ir.Constant(ir.IntType(64), V)
    at = [q, builder.add(q, step), builder.add(q, dy), builder.add(builder.add(q, dy), step)]
    return [builder.load(_pointer(context, builder, sig.args[0], args[0], a, V), align=align)
            for a in at], at


@intrinsic
def _lanes_bilinear(typingctx, xt, q, dy, ot, o, w00, w01, w10, w11):
    """ot[o:o+V] = w00 * xt[q] + w01 * xt[q+V] + w10 * xt[q+dy] + w11 * xt[q+dy+V], each
    term a V-lane vector, summed left to right."""
    dtype = xt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        (v00, v01, v10, v11), _ = _taps4(context, builder, sig, args, V, align)
        w = [_scalar(context, builder, sig, args, k, dtype, V) for k in (5, 6, 7, 8)]
        acc = builder.fmul(w[0], v00)
        acc = builder.fadd(acc, builder.fmul(w[1], v01))
        acc = builder.fadd(acc, builder.fmul(w[2], v10))
        acc = builder.fadd(acc, builder.fmul(w[3], v11))
        o_ = _index(context, builder, sig, args, 4)
        builder.store(acc, _pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        return context.get_dummy_value()

    return nbtypes.none(xt, q, dy, ot, o, w00, w01, w10, w11), codegen


def _hsum(builder, v, V):
    """Sum of the V lanes of v, halves added pairwise (a fixed order)."""
    mty = ir.IntType(32)
    while V > 1:
        half = V // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(mty, half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(mty, half),
                                                      list(range(half, V))))
        v = builder.fadd(lo, hi)
        V = half
    return builder.extract_element(v, ir.Constant(mty, 0))


@intrinsic
def _lanes_coord_grad(typingctx, xt, q, dy, gt, o, tx, ty):
    """(sum over lanes of g * ((v01 - v00) * (1 - ty) + (v11 - v10) * ty),
        sum over lanes of g * ((v10 - v00) * (1 - tx) + (v11 - v01) * tx)),
    g = gt[o:o+V], the taps as in _lanes_bilinear: d(sample)/d(pixel x, y) summed over a
    tile's channels."""
    dtype = xt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        (v00, v01, v10, v11), _ = _taps4(context, builder, sig, args, V, align)
        o_ = _index(context, builder, sig, args, 4)
        g = builder.load(_pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        tx_ = _scalar(context, builder, sig, args, 5, dtype, V)
        ty_ = _scalar(context, builder, sig, args, 6, dtype, V)
        one = ir.Constant(tx_.type, [ir.Constant(tx_.type.element, 1.0)] * V)
        tx1, ty1 = builder.fsub(one, tx_), builder.fsub(one, ty_)
        dx = builder.fadd(builder.fmul(builder.fsub(v01, v00), ty1),
                          builder.fmul(builder.fsub(v11, v10), ty_))
        dyv = builder.fadd(builder.fmul(builder.fsub(v10, v00), tx1),
                           builder.fmul(builder.fsub(v11, v01), tx_))
        gix = _hsum(builder, builder.fmul(g, dx), V)
        giy = _hsum(builder, builder.fmul(g, dyv), V)
        return context.make_tuple(builder, sig.return_type, [gix, giy])

    return nbtypes.UniTuple(dtype, 2)(xt, q, dy, gt, o, tx, ty), codegen


@intrinsic
def _lanes_scatter(typingctx, gxt, q, dy, gt, o, w00, w01, w10, w11):
    """gxt[q] += w00 * g, gxt[q+V] += w01 * g, gxt[q+dy] += w10 * g, gxt[q+dy+V] += w11 * g,
    in that order, g = gt[o:o+V]: a sample's gradient added to its four taps' lanes."""
    dtype = gxt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        o_ = _index(context, builder, sig, args, 4)
        g = builder.load(_pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        taps, at = _taps4(context, builder, sig, args, V, align)
        for k, tap, a in zip((5, 6, 7, 8), taps, at):
            w = _scalar(context, builder, sig, args, k, dtype, V)
            p = _pointer(context, builder, sig.args[0], args[0], a, V)
            builder.store(builder.fadd(tap, builder.fmul(w, g)), p, align=align)
        return context.get_dummy_value()

    return nbtypes.none(gxt, q, dy, gt, o, w00, w01, w10, w11), codegen


@njit(inline="always", cache=True)
def _zero_tile_ring(T, b0, b1, H, W):
    """Zero the padding of a tile of image rows b0..b1 (see _to_tile_rows): its first and
    last columns, and its rows outside the image."""
    V = tile_lanes(T.itemsize)
    W2 = W + 2
    for y in range(b0, b1 + 1):
        row = (y - b0) * W2 * V
        if y < 0 or y >= H:
            T[row : row + W2 * V] = 0.0
        else:
            T[row : row + V] = 0.0
            T[row + (W + 1) * V : row + W2 * V] = 0.0


@njit(inline="always", cache=True)
def _move_pixels(planes, p_off, p_stride, T, t_off, count, cg, to_tile):
    """Between cg planes and a tile: value i of plane ``lane`` (planes[p_off + lane *
    p_stride + i]) <-> T[t_off + i * V + lane], i < count. Into the tile when
    ``to_tile`` (lanes past cg set to 0), else back into the planes (lanes < cg)."""
    V = tile_lanes(T.itemsize)
    if cg == V and count >= V:
        for i0 in range(0, count, V):
            i = min(i0, count - V)  # the last block overlaps the one before: same values
            if to_tile:
                _transpose_block(planes, p_off + i, p_stride, T, t_off + i * V, V)
            else:
                _transpose_block(T, t_off + i * V, V, planes, p_off + i, p_stride)
    elif to_tile:
        for i in range(count):
            for lane in range(V):
                T[t_off + i * V + lane] = planes[p_off + lane * p_stride + i] if lane < cg else 0.0
    else:
        for i in range(count):
            for lane in range(cg):
                planes[p_off + lane * p_stride + i] = T[t_off + i * V + lane]


@njit(cache=True)
def _to_tile_rows(planes, off, cg, HW, W, T, lo, hi, b0):
    """Image rows lo..hi into a tile of rows from b0: T[((y - b0) * (W + 2) + x + 1) * V
    + lane] = planes[off + lane * HW + y * W + x] for the cg channels lane < cg, 0 in the
    other lanes (V = tile_lanes)."""
    V = tile_lanes(T.itemsize)
    for y in range(lo, hi + 1):
        _move_pixels(planes, off + y * W, HW, T, ((y - b0) * (W + 2) + 1) * V, W, cg, True)


@njit(cache=True)
def _from_tile_rows(T, planes, off, cg, HW, W, H):
    """The inverse of _to_tile_rows for a whole image's tile (b0 = -1), lanes < cg."""
    V = tile_lanes(T.itemsize)
    for y in range(H):
        _move_pixels(planes, off + y * W, HW, T, ((y + 1) * (W + 2) + 1) * V, W, cg, False)


@njit(inline="always", cache=True)
def _cover_rows(planes, off, cg, HW, H, W, T, b0, b1, KIND, Y0, f_lo, f_hi):
    """Make sure the tile of rows b0..b1 holds the image rows a chunk's samples read
    there (rows f_lo..f_hi are in already); return the new filled interval."""
    lo = H
    hi = -1
    for j in range(KIND.shape[0]):
        if KIND[j] != _OUTSIDE:
            lo = min(lo, Y0[j])
            hi = max(hi, Y0[j] + 1)
    lo = max(lo, b0, 0)
    hi = min(hi, b1, H - 1)
    if lo > hi:
        return f_lo, f_hi
    if f_lo > f_hi:
        _to_tile_rows(planes, off, cg, HW, W, T, lo, hi, b0)
        return lo, hi
    if lo < f_lo:
        _to_tile_rows(planes, off, cg, HW, W, T, lo, f_lo - 1, b0)
        f_lo = lo
    if hi > f_hi:
        _to_tile_rows(planes, off, cg, HW, W, T, f_hi + 1, hi, b0)
        f_hi = hi
    return f_lo, f_hi


@njit(inline="always", cache=True)
def _sample_direct(planes, off, cg, HW, H, W, j, K, X0, Y0, w00, w01, w10, w11, OT, o, zero):
    """OT[o + lane] for lane < cg: sample j read from the planes themselves (taps in the
    padding read 0), for a sample whose rows are not in its tile. The same products,
    added in the same order, as _lanes_bilinear."""
    for lane in range(cg):
        src = planes[off + lane * HW : off + (lane + 1) * HW]
        v00, v01, v10, v11, _, _, _, _ = _corner_values(src, j, H, W, K, X0, Y0, zero)
        OT[o + lane] = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11


@njit(parallel=True, cache=True)
def warp_forward_tiles(x, m, out, border, align, projective, eps16, runs, tasks, shrink):
    """warp_forward for bilinear sampling on tiles (see above).

    A unit of work is (image, channel group, run of output rows): the output rows are
    split into ``runs`` runs of whole chunks, and the units into ``tasks`` contiguous
    runs, each with its scratch memory (any split gives the same result). A unit's tile
    holds the input rows its run can read (_footprint, and a row of padding either side),
    transposed as they are first needed; a sample reading rows outside them (none, as
    _footprint bounds them) is read from the input directly. ``shrink``: rows taken off
    either side of the tile, to test that path (0 otherwise).
    """
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    V = tile_lanes(x.itemsize)
    G = (C + V - 1) // V
    HW, HWo = H * W, Ho * Wo
    flat_x = x.reshape(N * C * HW)
    flat_out = out.reshape(N * C * HWo)
    xo = _base_coords(Wo, align, False)
    yos = _base_coords(Ho, align, False)
    chunk_rows, _ = _chunking(Ho, Wo, 1)
    XO = _tiled(xo, chunk_rows)
    L = XO.shape[0]
    chunks = Ho // chunk_rows
    per = (chunks + runs - 1) // runs
    W2 = W + 2
    dy = W2 * V
    units = N * G * runs
    per_task = (units + tasks - 1) // tasks
    for w in prange(tasks):  # scratch allocated once a task, reused by its units
        XT = np.empty(0, x.dtype)  # grown to the largest tile the task needs
        OT = np.empty(L * V, x.dtype)
        zero = np.zeros(1, x.dtype)[0]
        f64 = np.empty((7, L), np.float64)
        IX, IY, TX, TY, GX, GY, YO = f64[0], f64[1], f64[2], f64[3], f64[4], f64[5], f64[6]
        ints = np.empty((3, L), np.int64)
        K, X0, Y0 = ints[0], ints[1], ints[2]
        KIND = np.empty(L, np.int8)
        wts = np.empty((4, L), x.dtype)
        W00, W01, W10, W11 = wts[0], wts[1], wts[2], wts[3]
        for t in range(w * per_task, min(units, (w + 1) * per_task)):
            n = t // (G * runs)
            rest = t - n * G * runs
            g = rest // runs
            r = rest - g * runs
            c0 = g * V
            cg = min(C, c0 + V) - c0
            i_start = r * per * chunk_rows
            i_end = min(chunks, (r + 1) * per) * chunk_rows
            if i_start >= i_end:
                continue
            _, _, y_lo, y_hi = _footprint(m[n], xo[0], xo[Wo - 1], yos[i_start],
                                          yos[i_end - 1], H, W, align, projective, eps16)
            b0 = y_lo - 1 + shrink
            b1 = max(b0, y_hi + 1 - shrink)
            if XT.size < (b1 - b0 + 1) * W2 * V:
                XT = np.empty((b1 - b0 + 1) * W2 * V, x.dtype)
            _zero_tile_ring(XT, b0, b1, H, W)
            off_x = (n * C + c0) * HW
            off_o = (n * C + c0) * HWo
            f_lo, f_hi = 0, -1
            for i0 in range(i_start, i_end, chunk_rows):
                _fill_rows(YO, yos, i0, Wo)
                _coords(m[n], XO, YO, H, W, border, align, projective, eps16, False, False,
                        IX, IY, GX, GY, GX, GX, GX)
                _taps(H, W, False, IX, IY, KIND, K, X0, Y0, TX, TY, W00, W01, W10, W11)
                f_lo, f_hi = _cover_rows(flat_x, off_x, cg, HW, H, W, XT, b0, b1, KIND, Y0,
                                         f_lo, f_hi)
                for j in range(L):
                    y0 = Y0[j]
                    if KIND[j] == _OUTSIDE:
                        OT[j * V : (j + 1) * V] = 0.0
                    elif b0 <= y0 and y0 < b1:
                        q = ((y0 - b0) * W2 + X0[j] + 1) * V
                        _lanes_bilinear(XT, q, dy, OT, j * V, W00[j], W01[j], W10[j], W11[j])
                    else:
                        _sample_direct(flat_x, off_x, cg, HW, H, W, j, K, X0, Y0, W00[j], W01[j],
                                       W10[j], W11[j], OT, j * V, zero)
                _move_pixels(flat_out, off_o + i0 * Wo, HWo, OT, 0, L, cg, False)


@njit(parallel=True, cache=True)
def warp_backward_tiles(x, m, gout, gx, gm, need_x, need_m, border, align, projective, eps16,
                        tasks):
    """warp_backward for bilinear sampling on tiles (see above); gm: (N, G, 3, 3) with G
    channel groups of tile_lanes channels.

    A unit of work is (image, channel group), all output rows, as in warp_backward: it
    alone writes its input-gradient planes (scattered into a tile, transposed back at
    the end) and its own partial matrix gradient. The pairs are split into ``tasks``
    contiguous runs, each with its scratch memory (any split gives the same result).
    """
    N, C, H, W = x.shape
    Ho, Wo = gout.shape[2], gout.shape[3]
    V = tile_lanes(x.itemsize)
    G = (C + V - 1) // V
    HW, HWo = H * W, Ho * Wo
    flat_x = x.reshape(N * C * HW)
    flat_go = gout.reshape(N * C * HWo)
    flat_gx = gx.reshape(gx.size)
    xo = _base_coords(Wo, align, False)
    yos = _base_coords(Ho, align, False)
    chunk_rows, _ = _chunking(Ho, Wo, 1)
    XO = _tiled(xo, chunk_rows)
    L = XO.shape[0]
    W2 = W + 2
    dy = W2 * V
    tile = (H + 2) * W2 * V
    per = (N * G + tasks - 1) // tasks
    for w in prange(tasks):  # scratch allocated once a task, reused by its pairs
        XT = np.empty(tile if need_m else 1, x.dtype)
        if need_m:
            _zero_tile_ring(XT, -1, H, H, W)  # the ring stays zero: only rows are refilled
        GXT = np.empty(tile if need_x else 1, x.dtype)
        GT = np.empty(L * V, x.dtype)
        f64 = np.empty((11, L), np.float64)
        IX, IY, GX, GY = f64[0], f64[1], f64[2], f64[3]
        XS, YS, WS, DX, DY, DW, YO = f64[4], f64[5], f64[6], f64[7], f64[8], f64[9], f64[10]
        ints = np.empty((3, L), np.int64)
        K, X0, Y0 = ints[0], ints[1], ints[2]
        KIND = np.empty(L, np.int8)
        vals = np.empty((8, L), x.dtype)
        W00, W01, W10, W11, TX, TY, GIX, GIY = (vals[0], vals[1], vals[2], vals[3], vals[4],
                                                 vals[5], vals[6], vals[7])
        acc = np.zeros(9)  # the matrix gradient, row-major
        for t in range(w * per, min(N * G, (w + 1) * per)):
            n = t // G
            g = t - n * G
            c0 = g * V
            cg = min(C, c0 + V) - c0
            if need_x:
                GXT[:] = 0.0
            acc[:] = 0.0
            off_x = (n * C + c0) * HW
            off_o = (n * C + c0) * HWo
            f_lo, f_hi = 0, -1
            for i0 in range(0, Ho, chunk_rows):
                base = i0 * Wo
                _fill_rows(YO, yos, i0, Wo)
                _coords(m[n], XO, YO, H, W, border, align, projective, eps16, need_m, False,
                        IX, IY, GX, GY, XS, YS, WS)
                _taps(H, W, False, IX, IY, KIND, K, X0, Y0, TX, TY, W00, W01, W10, W11)
                _move_pixels(flat_go, off_o + base, HWo, GT, 0, L, cg, True)
                if need_x:
                    for j in range(L):
                        if KIND[j] != _OUTSIDE:
                            q = ((Y0[j] + 1) * W2 + X0[j] + 1) * V
                            _lanes_scatter(GXT, q, dy, GT, j * V, W00[j], W01[j], W10[j], W11[j])
                if not need_m:
                    continue
                f_lo, f_hi = _cover_rows(flat_x, off_x, cg, HW, H, W, XT, -1, H, KIND, Y0, f_lo,
                                         f_hi)
                for j in range(L):
                    if KIND[j] == _OUTSIDE:  # reads no pixel: a NaN grad_out there stays out
                        GIX[j] = 0.0
                        GIY[j] = 0.0
                    else:
                        q = ((Y0[j] + 1) * W2 + X0[j] + 1) * V
                        GIX[j], GIY[j] = _lanes_coord_grad(XT, q, dy, GT, j * V, TX[j], TY[j])
                _add_matrix_grad(acc, GIX, GIY, GX, GY, XS, YS, WS, DX, DY, DW, XO, YO,
                                 projective)
            if need_x:
                _from_tile_rows(GXT, flat_gx, off_x, cg, HW, W, H)
            if need_m:
                gm[n, g] = acc.reshape(3, 3)


def _renamed(fn, name):
    """A copy of ``fn`` under another name: Numba names its cache files after the function,
    and a serial and a parallel compilation of one function would overwrite each other."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    return copy


# The same kernels on the calling thread (prange runs as range), for small warps.
warp_forward_serial = njit(cache=True)(_renamed(warp_forward.py_func, "warp_forward_serial"))
warp_backward_serial = njit(cache=True)(_renamed(warp_backward.py_func, "warp_backward_serial"))
warp_forward_tiles_serial = njit(cache=True)(
    _renamed(warp_forward_tiles.py_func, "warp_forward_tiles_serial"))
warp_backward_tiles_serial = njit(cache=True)(
    _renamed(warp_backward_tiles.py_func, "warp_backward_tiles_serial"))
