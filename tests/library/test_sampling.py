import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

import torchstn as ts


def _unnormalize(c, size, align_corners):
    return (c + 1) / 2 * (size - 1) if align_corners else ((c + 1) * size - 1) / 2


def _reflect(c, lo, hi):
    """Reflect c into [lo, hi] (mirror at both ends, repeated)."""
    if lo == hi:
        return 0.0
    span = hi - lo
    c = abs(c - lo)
    flips, extra = divmod(c, span)
    return lo + extra if int(flips) % 2 == 0 else hi - extra


def _pad_coord(c, size, padding, align_corners):
    if padding == "border":
        return min(max(c, 0.0), size - 1.0)
    if padding == "reflection":
        c = _reflect(c, 0.0, size - 1.0) if align_corners else _reflect(c, -0.5, size - 0.5)
        return min(max(c, 0.0), size - 1.0)
    return c


def _cubic_weights(t, a=-0.75):
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def reference_sample(x, grid, mode, padding, align_corners):
    """Plain float64 NumPy re-implementation of grid_sample's documented semantics (4-D)."""
    x, grid = x.double().numpy(), grid.double().numpy()
    n, c, h, w = x.shape
    ho, wo = grid.shape[1:3]
    out = np.zeros((n, c, ho, wo))

    def read(b, yi, xi):
        if 0 <= yi < h and 0 <= xi < w:
            return x[b, :, yi, xi]
        return np.zeros(c)

    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                gx, gy = grid[b, i, j]
                ix = _unnormalize(gx, w, align_corners)
                iy = _unnormalize(gy, h, align_corners)
                if mode == "bicubic":
                    # Padding applies to each tap's integer position.
                    x0, y0 = math.floor(ix), math.floor(iy)
                    wx, wy = _cubic_weights(ix - x0), _cubic_weights(iy - y0)
                    acc = np.zeros(c)
                    for ky in range(4):
                        for kx in range(4):
                            yy, xx = y0 - 1 + ky, x0 - 1 + kx
                            if padding != "zeros":
                                yy = int(_pad_coord(float(yy), h, padding, align_corners))
                                xx = int(_pad_coord(float(xx), w, padding, align_corners))
                            acc += wy[ky] * wx[kx] * read(b, yy, xx)
                    out[b, :, i, j] = acc
                    continue
                ix = _pad_coord(ix, w, padding, align_corners)
                iy = _pad_coord(iy, h, padding, align_corners)
                if mode == "nearest":
                    out[b, :, i, j] = read(b, int(np.rint(iy)), int(np.rint(ix)))
                else:
                    x0, y0 = math.floor(ix), math.floor(iy)
                    tx, ty = ix - x0, iy - y0
                    out[b, :, i, j] = ((1 - ty) * ((1 - tx) * read(b, y0, x0) + tx * read(b, y0, x0 + 1))
                                       + ty * ((1 - tx) * read(b, y0 + 1, x0) + tx * read(b, y0 + 1, x0 + 1)))
    return torch.from_numpy(out)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ts.PADDING_MODES)
@pytest.mark.parametrize("mode", ts.MODES)
def test_sample_matches_pytorch_and_float64_reference(mode, padding, align_corners):
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    grid = torch.rand(2, 4, 7, 2, dtype=torch.float64) * 3.2 - 1.6  # well past the borders
    out = ts.sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    ref = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(out, reference_sample(x, grid, mode, padding, align_corners),
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_zeros_matches_scipy_map_coordinates(align_corners):
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    grid = torch.rand(1, 5, 6, 2, dtype=torch.float64) * 2.6 - 1.3
    out = ts.sample(x, grid, align_corners=align_corners)
    cols = _unnormalize(grid[0, ..., 0].numpy(), 11, align_corners)
    rows = _unnormalize(grid[0, ..., 1].numpy(), 9, align_corners)
    ref = map_coordinates(x[0, 0].numpy(), [rows, cols], order=1, mode="grid-constant", cval=0.0)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(ref), atol=1e-12, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", ts.PADDING_MODES)
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_sample_5d_matches_pytorch(mode, padding, align_corners):
    x = torch.rand(2, 2, 3, 4, 5, dtype=torch.float64)
    grid = torch.rand(2, 2, 3, 4, 3, dtype=torch.float64) * 2.4 - 1.2
    out = ts.sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    ref = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2),
                                       (torch.float16, 4e-3)])
def test_sample_low_precision_close_to_float64(dtype, tol):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    grid = torch.rand(2, 5, 5, 2, dtype=torch.float64) * 1.8 - 0.9
    ref = ts.sample(x, grid)
    out = ts.sample(x.to(dtype), grid.to(dtype))
    assert out.dtype == dtype
    # bfloat16 also rounds the grid, so compare against the rounded grid's exact answer.
    exact = ts.sample(x.to(dtype).double(), grid.to(dtype).double())
    torch.testing.assert_close(out.double(), exact, atol=tol, rtol=0)
    torch.testing.assert_close(out.double(), ref, atol=max(tol, 0.05), rtol=0)


def test_sample_errors():
    x, grid = torch.rand(2, 1, 4, 4), torch.zeros(2, 3, 3, 2)
    with pytest.raises(TypeError, match="input must be a floating-point tensor.*torch.uint8"):
        ts.sample(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), grid)
    with pytest.raises(ValueError, match=r"input must be \(N, C, H, W\) or \(N, C, D, H, W\), got shape \(1, 4, 4\)"):
        ts.sample(torch.rand(1, 4, 4), grid)
    with pytest.raises(ValueError, match=r"grid must have shape \(N, H_out, W_out, 2\) for a 4-D input, got \(2, 3, 3, 3\)"):
        ts.sample(x, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="grid has batch size 3 but input has batch size 2"):
        ts.sample(x, torch.zeros(3, 3, 3, 2))
    with pytest.raises(TypeError, match="grid dtype torch.float64 must match input dtype torch.float32"):
        ts.sample(x, torch.zeros(2, 3, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mode must be one of \['nearest', 'bilinear', 'bicubic'\], got 'linear'"):
        ts.sample(x, grid, mode="linear")
    with pytest.raises(ValueError, match="padding_mode must be one of .* got 'wrap'"):
        ts.sample(x, grid, padding_mode="wrap")
    with pytest.raises(ValueError, match="mode 'bicubic' supports 4-D input"):
        ts.sample(torch.rand(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 1, 3), mode="bicubic")
