"""Anti-aliased sampling (torchstn.antialias): exact where it must be (plain bilinear where
nothing shrinks, the area average for integer shrinks), close to a dense float64
supersampling of each output pixel's exact footprint elsewhere, differentiable."""

import math

import pytest
import torch
import torch.nn.functional as F

import torchstn as ts
from torchstn.antialias import MAX_SAMPLES, footprint, sample_counts

D64 = torch.float64


def _base(n, ho, wo, dtype=D64):
    eye = torch.eye(2, 3, dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(eye, (n, 1, ho, wo), align_corners=False)


def _grid(m, ho, wo):
    """The exact grid of matrices m (N, 3, 3) at output size (ho, wo)."""
    base = _base(m.shape[0], ho, wo, m.dtype)
    h = torch.cat([base, torch.ones_like(base[..., :1])], -1) @ m.transpose(1, 2)[:, None]
    return h[..., :2] / h[..., 2:]


def _dense(x, m, ho, wo, density=32):
    """Independent reference: each output pixel split into density^2 cells, each cell's
    centre mapped exactly by m, sampled bilinearly, averaged (float64)."""
    fine = _grid(m, ho * density, wo * density)
    return F.avg_pool2d(F.grid_sample(x, fine, align_corners=False), density)


def _smooth(n, c, h, w, sigma=2, seed=0):
    """Band-limited noise (Gaussian-blurred, circular), unit standard deviation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, dtype=D64, generator=g)
    r = 3 * sigma
    k = torch.exp(-torch.arange(-r, r + 1, dtype=D64) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r,) * 4, mode="circular"), (k[:, None] * k).expand(c, 1, -1, -1),
                 groups=c)
    return x / x.std()


def _rts(angle, scale, tx=0.0, ty=0.0):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]]], dtype=D64)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_no_shrink_is_the_plain_sample_bit_for_bit(mode, padding_mode):
    x = torch.randn(2, 3, 16, 16)
    # The identity, an enlargement and a rotation (of a square image: a rotation in
    # pixels too): no footprint edge longer than a pixel.
    grids = [_base(2, 16, 16, torch.float32), _base(2, 16, 16, torch.float32) * 0.5,
             _grid(_rts(0.4, 1.0, 0.1, -0.2).expand(2, 3, 3), 16, 16).float()]
    for g in grids:
        plain = ts.sample(x, g, mode=mode, padding_mode=padding_mode)
        aa = ts.sample(x, g, mode=mode, padding_mode=padding_mode, antialias=True)
        assert torch.equal(aa, plain)


@pytest.mark.parametrize("s, h, w", [(2, 16, 24), (3, 18, 12), (4, 32, 32)])
def test_integer_shrink_is_the_area_average(s, h, w):
    x = torch.randn(2, 3, h, w, dtype=D64)
    aa = ts.sample(x, _base(2, h // s, w // s), antialias=True)
    torch.testing.assert_close(aa, F.avg_pool2d(x, s), rtol=0, atol=1e-12)
    if s > 2:  # (at s = 2 the plain bilinear sample is the 2 x 2 average too)
        plain = ts.sample(x, _base(2, h // s, w // s))
        assert (plain - F.avg_pool2d(x, s)).abs().max() > 0.1


@pytest.mark.parametrize("angle, scale, out, tol", [
    (0.3, 1.0, 32, 0.15),  # a rotated footprint of 2 x 2 pixels
    (0.3, 2.0, 32, 0.05),  # 4 x 4
    (0.7, 3.0, 16, 0.01),  # 12 x 12
    (0.0, 2.5, 24, 0.03),  # 6.7 x 6.7, non-integer
])
def test_rotated_shrink_matches_dense_footprint_supersampling(angle, scale, out, tol):
    x = _smooth(1, 2, 64, 64)
    m = _rts(angle, scale, 0.05, -0.1)
    g = _grid(m, out, out)
    dense = _dense(x, m, out, out)
    aa = ts.sample(x, g, antialias=True)
    plain = ts.sample(x, g)
    assert (aa - dense).abs().max() < tol
    assert (plain - dense).abs().max() > 5 * (aa - dense).abs().max()


def test_projective_footprint_per_output_pixel():
    x = _smooth(1, 2, 64, 64)
    m = torch.tensor([[[1.2, 0.1, 0.0], [0.05, 1.1, 0.0], [0.4, 0.3, 1.0]]], dtype=D64)
    g = _grid(m, 20, 20)
    ex, ey = footprint(g, (64, 64))
    kx = sample_counts(ex)
    assert kx.min() < kx.max()  # the footprint varies over the output
    aa = ts.sample(x, g, antialias=True)
    dense = _dense(x, m, 20, 20)
    assert (aa - dense).abs().max() < 0.06
    assert (ts.sample(x, g) - dense).abs().max() > 1.0


def test_footprint_and_counts():
    # An affine map scaling x by 3 and y by 0.5 (input pixels per output pixel at an
    # output of the input's size).
    m = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]], dtype=D64)
    g = _grid(m, 10, 10)
    ex, ey = footprint(g, (10, 10))
    torch.testing.assert_close(ex, torch.tensor([3.0, 0.0], dtype=D64).expand_as(ex))
    torch.testing.assert_close(ey, torch.tensor([0.0, 0.5], dtype=D64).expand_as(ey))
    assert sample_counts(ex).unique().tolist() == [3]
    assert sample_counts(ey).unique().tolist() == [1]
    assert sample_counts(torch.tensor([[1.0005, 0.0], [1.01, 0.0]])).tolist() == [1, 2]
    huge = torch.tensor([[1e6, 0.0], [float("nan"), 0.0], [float("inf"), 1.0]])
    assert sample_counts(huge).tolist() == [MAX_SAMPLES, 1, 1]


def test_one_pixel_output_axis_is_not_averaged_along_it():
    x = torch.randn(1, 1, 8, 8, dtype=D64)
    g = _base(1, 1, 4)  # one row: no vertical neighbour to measure the footprint
    ex, ey = footprint(g, (8, 8))
    assert torch.equal(ey, torch.zeros_like(ey)) and (ex[..., 0] == 2).all()
    # Two points half a pixel (1/8 in normalised units) either side, horizontally only.
    half = torch.tensor([0.125, 0.0], dtype=D64)
    expected = (F.grid_sample(x, g - half, align_corners=False)
                + F.grid_sample(x, g + half, align_corners=False)) / 2
    torch.testing.assert_close(ts.sample(x, g, antialias=True), expected, rtol=0, atol=1e-12)


def test_against_interpolate_antialias():
    """torch's bilinear antialias filters with a triangle twice as wide as the footprint
    (PIL's filter); ours averages the footprint (a box). On band-limited images the two
    agree to a few hundredths of the image's standard deviation, away from the border
    (interpolate renormalises its filter there; sample pads by padding_mode)."""
    x = _smooth(1, 2, 96, 96, sigma=3)
    for s in (2, 3, 4):
        out = 96 // s
        aa = ts.sample(x, _base(1, out, out), antialias=True)
        ref = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True)
        d = (aa - ref)[..., 1:-1, 1:-1].abs()
        assert d.mean() < 0.08 and d.max() < 0.4
        plain = ts.sample(x, _base(1, out, out))
        assert (plain - ref)[..., 1:-1, 1:-1].abs().mean() > d.mean()


@pytest.mark.parametrize("family", ["affine", "projective", "tps"])
def test_gradcheck_float64(family):
    tf = ts.get_transform(family)
    g = torch.Generator().manual_seed(1)
    p = tf.identity(dtype=D64)[None].clone()
    if family == "tps":
        p = p + 0.05 * torch.randn(p.shape, dtype=D64, generator=g)
        p = p * 2.2  # spread the control points: a shrinking warp
    else:
        p = tf.from_matrix(_rts(0.3, 2.2, 0.05, 0.02) if family == "affine" else torch.tensor(
            [[[2.1, 0.2, 0.0], [0.1, 1.9, 0.05], [0.2, 0.1, 1.0]]], dtype=D64))
    x = torch.randn(1, 2, 9, 9, dtype=D64, generator=g)
    x.requires_grad_()
    p.requires_grad_()

    def f(x, p):
        return ts.warp(x, p, tf, out_size=(5, 4), antialias=True, backend="torch")

    counts = sample_counts(footprint(tf.grid(p.detach(), (1, 2, 5, 4)), (9, 9))[0])
    assert counts.max() > 1  # the check runs where the footprint is averaged
    assert torch.autograd.gradcheck(f, (x, p))


def test_warp_antialias_options_and_errors():
    x = torch.randn(2, 3, 32, 32)
    p = ts.get_transform("attention").identity().expand(2, 3)
    aa = ts.warp(x, p, "attention", out_size=(8, 8), antialias=True)
    torch.testing.assert_close(aa, F.avg_pool2d(x, 4))
    with pytest.raises(ValueError, match="backend 'numba'.*antialias with mode 'nearest' runs "
                                         "on backend 'torch'"):
        ts.warp(x, p, "attention", out_size=(8, 8), antialias=True, backend="numba",
                mode="nearest")
    with pytest.raises(ValueError, match="antialias supports the 2-D families, got 'affine3d'"):
        ts.warp(torch.randn(1, 1, 4, 4, 4), torch.eye(3, 4).reshape(1, 12), "affine3d",
                antialias=True)
    with pytest.raises(ValueError, match="antialias supports 4-D input"):
        ts.sample(torch.randn(1, 1, 4, 4, 4), torch.zeros(1, 2, 2, 2, 3), antialias=True)


def test_the_reference_path_says_it_does_not_export():
    """The reference path's sample counts depend on the data (the fused kernels export:
    tests/ops/test_numba_antialias.py)."""
    stn = ts.SpatialTransformer(None, "affine", in_channels=1, out_size=(4, 4), antialias=True,
                                backend="torch")
    with pytest.raises(NotImplementedError, match="antialias=True does not export yet"):
        torch.export.export(stn, (torch.randn(1, 1, 16, 16),))
