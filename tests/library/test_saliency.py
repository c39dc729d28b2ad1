"""The saliency sampler (Recasens et al., ECCV 2018): saliency_grid against the paper's
formula written out directly, its border handling, its zoom; the SaliencySampler module."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchstn as ts
from torchstn.antialias import footprint

D64 = torch.float64


def _identity(n, ho, wo, align_corners=False):
    eye = torch.eye(2, 3, dtype=D64).expand(n, 2, 3)
    return ts.affine_grid(eye, (n, 1, ho, wo), align_corners=align_corners)


@pytest.mark.parametrize("out_size", [(8, 8), (16, 12), (3, 5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_uniform_saliency_is_the_identity(out_size, align_corners):
    s = torch.full((2, 1, 8, 8), 0.3, dtype=D64)
    g = ts.saliency_grid(s, out_size, 2.0, align_corners=align_corners)
    torch.testing.assert_close(g, _identity(2, *out_size, align_corners), rtol=0, atol=1e-12)


def test_against_the_formula_written_out():
    """Eq. 3-4 with replicated borders, summed cell by cell in float64 (numpy)."""
    rng = np.random.default_rng(0)
    h, w, sigma = 5, 6, 1.1
    s = rng.uniform(0.1, 1.0, (h, w))
    r = math.ceil(3 * sigma)
    grid = ts.saliency_grid(torch.tensor(s)[None, None], (h, w), sigma)[0].numpy()
    for i in range(h):
        for j in range(w):
            num_x = num_y = den = 0.0
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    ii, jj = i + di, j + dj  # a padded cell: its position, a border's value
                    weight = s[min(max(ii, 0), h - 1), min(max(jj, 0), w - 1)] * math.exp(
                        -(di**2 + dj**2) / (2 * sigma**2))
                    num_x += weight * ((2 * jj + 1) / w - 1)
                    num_y += weight * ((2 * ii + 1) / h - 1)
                    den += weight
            expected = np.clip([num_x / den, num_y / den], -1, 1)
            np.testing.assert_allclose(grid[i, j], expected, rtol=0, atol=1e-12)


def test_a_peak_is_magnified_and_stays_put():
    s = torch.full((1, 1, 31, 31), 1e-3, dtype=D64)
    s[0, 0, 15, 15] = 1.0
    g = ts.saliency_grid(s, (63, 63), 13 / 2.3548)
    centre = g[0, 31, 31]
    torch.testing.assert_close(centre, torch.zeros(2, dtype=D64), rtol=0, atol=1e-12)
    ex, ey = footprint(g, (63, 63))  # input pixels per output pixel, same-size image
    assert ex[0, 31, 31].norm() < 1 / 3 and ey[0, 31, 31].norm() < 1 / 3  # > 3x zoom
    assert ex[0, 31, 5].norm() > 1.2  # the periphery gives up resolution
    assert g.abs().max() <= 1.0


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(1, 1, 5, 5, dtype=D64, generator=g) + 0.2
    s.requires_grad_()
    assert torch.autograd.gradcheck(lambda s: ts.saliency_grid(s, (7, 6), 1.0), (s,))


def test_errors():
    with pytest.raises(ValueError, match=r"saliency must have shape \(N, 1, h, w\)"):
        ts.saliency_grid(torch.ones(1, 2, 4, 4), (4, 4), 1.0)
    with pytest.raises(ValueError, match="sigma must be a positive number of cells"):
        ts.saliency_grid(torch.ones(1, 1, 4, 4), (4, 4), 0.0)
    with pytest.raises(ValueError, match=r"padding must be an int >= ceil\(3 sigma\) = 3"):
        ts.saliency_grid(torch.ones(1, 1, 4, 4), (4, 4), 1.0, padding=2)
    with pytest.raises(ValueError, match="in_channels is required"):
        ts.SaliencySampler(None, out_size=(4, 4))
    bad = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match=r"saliency_net must return \(N, 1, h, w\)"):
        ts.SaliencySampler(bad, out_size=(4, 4))(torch.randn(1, 3, 8, 8))


def test_module_starts_as_a_resize_and_learns():
    torch.manual_seed(0)
    zoom = ts.SaliencySampler(None, in_channels=3, out_size=(16, 16), loc_size=(32, 32),
                              grid_size=9)
    x = torch.randn(2, 3, 64, 64)
    out, weights = zoom(x, return_saliency=True)
    torch.testing.assert_close(out, F.avg_pool2d(x, 4), rtol=0, atol=1e-5)
    torch.testing.assert_close(weights.sum((1, 2, 3)), torch.ones(2))
    assert weights.shape == (2, 1, 9, 9)
    out.square().mean().backward()
    assert zoom.saliency_net.out.weight.grad.abs().sum() > 0  # the saliency net learns


def test_module_compiles_and_exports():
    torch.manual_seed(0)
    zoom = ts.SaliencySampler(None, in_channels=1, out_size=(8, 8), grid_size=5,
                              antialias=False).eval()
    with torch.no_grad():
        zoom.saliency_net.out.weight.normal_()  # a non-uniform saliency
    x = torch.randn(2, 1, 16, 16)
    eager = zoom(x)
    compiled = torch.compile(zoom, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager)
    exported = torch.export.export(zoom, (x,))
    torch.testing.assert_close(exported.module()(x), eager)
