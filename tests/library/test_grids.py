import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchstn as ts


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(3, 2, 5, 7), (2, 1, 1, 6), (1, 1, 4, 1), (2, 3, 16, 16)])
def test_affine_grid_matches_pytorch(size, dtype, align_corners):
    theta = torch.randn(size[0], 2, 3, dtype=dtype)
    ours = ts.affine_grid(theta, size, align_corners=align_corners)
    ref = F.affine_grid(theta, size, align_corners=align_corners)
    assert ours.shape == ref.shape and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_5d_matches_pytorch(align_corners):
    theta = torch.randn(2, 3, 4, dtype=torch.float64)
    size = (2, 1, 3, 4, 5)
    torch.testing.assert_close(
        ts.affine_grid(theta, size, align_corners=align_corners),
        F.affine_grid(theta, size, align_corners=align_corners),
    )


def test_affine_grid_pinned_values():
    theta = torch.tensor([[[0.0, -1.0, 0.5], [1.0, 0.0, 0.0]]])  # rotation by 90 deg + shift
    grid = ts.affine_grid(theta, (1, 1, 2, 2), align_corners=True)
    # output (x, y) = (-1, -1) -> input (-y + 0.5, x) = (1.5, -1)
    expected = torch.tensor([[[1.5, -1.0], [1.5, 1.0]], [[-0.5, -1.0], [-0.5, 1.0]]])
    torch.testing.assert_close(grid[0], expected)


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_returns_input(align_corners):
    x = torch.rand(2, 3, 6, 9, dtype=torch.float64)
    grid = ts.identity_grid(x.shape, align_corners=align_corners, dtype=x.dtype)
    for mode in ts.MODES:
        out = ts.sample(x, grid, mode=mode, align_corners=align_corners)
        torch.testing.assert_close(out, x, atol=1e-12, rtol=0)


def _projective_reference(matrix, h, w, align_corners):
    """Float64 NumPy recomputation of the projective grid (points with w > 0 only)."""
    m = matrix.double().numpy()
    if align_corners:
        xs, ys = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
    else:
        xs, ys = (np.arange(w) * 2 + 1) / w - 1, (np.arange(h) * 2 + 1) / h - 1
    out = np.zeros((m.shape[0], h, w, 2))
    for n in range(m.shape[0]):
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                u, v, s = m[n] @ np.array([x, y, 1.0])
                out[n, i, j] = (u / s, v / s)
    return torch.from_numpy(out)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projective_grid_matches_float64_reference(dtype, align_corners):
    m = torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(4, 3, 3, dtype=torch.float64)
    m[:, 2, 2] = 1.0
    m[:, 2, :2] = m[:, 2, :2].clamp(-0.3, 0.3)  # w > 0.4 everywhere: no horizon
    ref = _projective_reference(m, 5, 7, align_corners)
    ours = ts.projective_grid(m.to(dtype), (4, 1, 5, 7), align_corners=align_corners)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours.double(), ref, atol=tol, rtol=tol)


def test_projective_grid_of_affine_matrix_is_affine_grid():
    theta = torch.randn(3, 2, 3, dtype=torch.float64)
    m = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(3, 1, 3)],
                  dim=1)
    torch.testing.assert_close(
        ts.projective_grid(m, (3, 1, 6, 5)), ts.affine_grid(theta, (3, 1, 6, 5))
    )


def test_projective_grid_is_invariant_to_positive_scale():
    m = torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(2, 3, 3, dtype=torch.float64)
    g = ts.projective_grid(m, (2, 1, 4, 4))
    torch.testing.assert_close(ts.projective_grid(3.7 * m, (2, 1, 4, 4)), g)
    torch.testing.assert_close(ts.projective_grid(1e-6 * m, (2, 1, 4, 4)), g)


def test_projective_points_behind_infinity_land_outside_with_finite_gradients():
    # w = 1 + 2x: zero at x = -0.5, negative for x < -0.5 (the left quarter of the image).
    m = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [2.0, 0, 1]]], dtype=torch.float64,
                     requires_grad=True)
    h, w = 6, 8  # x = -0.5 is exactly a pixel-column edge; column 1 has x = -0.625
    grid = ts.projective_grid(m, (1, 1, h, w))
    assert torch.isfinite(grid).all()
    behind = grid[0, :, :2]  # columns with x < -0.5
    assert torch.equal(behind, torch.full_like(behind, ts.FAR))
    assert grid.abs().max() <= ts.FAR
    x = torch.rand(1, 1, h, w, dtype=torch.float64)
    for padding in ts.PADDING_MODES:
        out = ts.sample(x, grid, padding_mode=padding)
        assert torch.isfinite(out).all()
        if padding == "zeros":
            assert torch.equal(out[0, 0, :, :2], torch.zeros(h, 2, dtype=torch.float64))
        (g,) = torch.autograd.grad(out.sum(), m, retain_graph=True)
        assert torch.isfinite(g).all()


def test_projective_point_exactly_at_infinity():
    # w = x exactly: 0 on the centre column of an odd-width align_corners grid.
    m = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [1, 0, 0]]], requires_grad=True)
    grid = ts.projective_grid(m, (1, 1, 3, 3), align_corners=True)
    assert torch.isfinite(grid).all()
    assert torch.equal(grid[0, :, :2], torch.full((3, 2, 2), ts.FAR))  # x = -1 and x = 0
    grid.sum().backward()
    assert torch.isfinite(m.grad).all()


def test_projective_grid_nonfinite_matrix_gives_nan_for_that_image_only():
    m = torch.eye(3).repeat(2, 1, 1)
    m[1, 0, 1] = float("inf")
    grid = ts.projective_grid(m, (2, 1, 3, 3))
    assert torch.isnan(grid[1]).all()
    torch.testing.assert_close(grid[0], ts.identity_grid((1, 1, 3, 3))[0])


def test_grid_errors():
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\) for a 4-D size, got \(8, 3, 3\)"):
        ts.affine_grid(torch.zeros(8, 3, 3), (8, 1, 4, 4))
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 3, 4\) for a 5-D size"):
        ts.affine_grid(torch.zeros(2, 2, 3), (2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="theta has batch size 2 but size has batch size 3"):
        ts.affine_grid(torch.zeros(2, 2, 3), (3, 1, 4, 4))
    with pytest.raises(TypeError, match="theta must be a floating-point tensor.*torch.int64"):
        ts.affine_grid(torch.zeros(2, 2, 3, dtype=torch.long), (2, 1, 4, 4))
    with pytest.raises(TypeError, match="theta must be a torch.Tensor, got list"):
        ts.affine_grid([[1, 0, 0], [0, 1, 0]], (1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"size must be a sequence of ints \(N, C, H, W\) or \(N, C, D, H, W\), N >= 0"):
        ts.affine_grid(torch.zeros(2, 2, 3), (2, 4, 4))
    with pytest.raises(ValueError, match=r"size must be a sequence of ints \(N, C, H, W\), N >= 0 and the others >= 1, got \(2, 1, 4, 4, 4\)"):
        ts.projective_grid(torch.zeros(2, 3, 3), (2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"size must be .* got \(2, 1, 0, 4\)"):
        ts.projective_grid(torch.zeros(2, 3, 3), (2, 1, 0, 4))
    with pytest.raises(ValueError, match=r"matrix must have shape \(N, 3, 3\), got \(2, 2, 3\)"):
        ts.projective_grid(torch.zeros(2, 2, 3), (2, 1, 4, 4))
