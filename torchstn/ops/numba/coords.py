"""Constants and the per-chunk helpers every CPU kernel shares: coordinates, taps, chunks.

Output rows are processed in chunks of whole rows (``_chunking``). A chunk's samples go
through ``_coords`` (input pixel coordinates from the matrix, paper Eq. 1) and ``_taps``
(each sample's kind, top-left tap and bilinear weights) into scratch arrays (``_Chunk``);
``_corner_values`` reads the taps of a sample that straddles the image border.
``_footprint`` bounds the input pixels that a block of output rows can read (for the
prefetch and the tiles).

Coordinates follow :func:`torchstn.grids.affine_grid` / :func:`torchstn.grids.projective_grid`
and :func:`torch.nn.functional.grid_sample`, computed in float64 whatever the image dtype.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CHANNEL_GROUP", "_BLOCK_VALUES", "_CHANNEL_BLOCK", "_CHUNK", "_FAR", "_INSIDE",
           "_OUTSIDE", "_PARTIAL", "_PIXEL_MAJOR_CHANNELS", "_SMALL_PLANE_BYTES", "_Chunk",
           "_base_coords", "_chunking", "_coords", "_corner_values", "_fill_rows", "_footprint",
           "_taps", "_tiled"]

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
