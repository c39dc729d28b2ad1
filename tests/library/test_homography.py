import numpy as np
import pytest
import torch

from torchstn.homography import homography_from_points


def _apply(h, pts):
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ h.transpose(1, 2)
    return ph[..., :2] / ph[..., 2:]


def test_maps_the_four_points_and_matches_numpy_dlt():
    src = torch.tensor([[[-1.0, -1], [1, -1], [1, 1], [-1, 1]]], dtype=torch.float64).repeat(3, 1, 1)
    dst = src + 0.2 * torch.randn(3, 4, 2, dtype=torch.float64)
    h = homography_from_points(src, dst)
    torch.testing.assert_close(_apply(h, src), dst)
    assert torch.equal(h[:, 2, 2], torch.ones(3, dtype=torch.float64))
    # Independent check: the null vector of the 8x9 DLT system (SVD), normalised.
    for n in range(3):
        rows = []
        for (x, y), (u, v) in zip(src[n].numpy(), dst[n].numpy()):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
        null = np.linalg.svd(np.array(rows))[2][-1]
        np.testing.assert_allclose(h[n].numpy(), (null / null[-1]).reshape(3, 3), atol=1e-10)


def test_least_squares_for_more_points():
    h_true = torch.tensor([[[1.1, 0.1, 0.2], [-0.1, 0.9, 0.0], [0.1, -0.2, 1.0]]], dtype=torch.float64)
    src = torch.rand(1, 9, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(homography_from_points(src, _apply(h_true, src)), h_true)


def test_errors():
    with pytest.raises(ValueError, match=r"src and dst must both have shape \(N, K, 2\) with K >= 4, got \(1, 3, 2\) and \(1, 3, 2\)"):
        homography_from_points(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    with pytest.raises(TypeError, match="src must be a floating-point tensor"):
        homography_from_points(torch.zeros(1, 4, 2, dtype=torch.long), torch.zeros(1, 4, 2))
