import pytest
import torch
from scipy.interpolate import RBFInterpolator

import torchstn as ts
from torchstn.tps import _lattice_mapping


def test_lattice_pinned():
    torch.testing.assert_close(
        ts.lattice(3),
        torch.tensor([[-1.0, -1], [0, -1], [1, -1], [-1, 0], [0, 0], [1, 0], [-1, 1], [0, 1],
                      [1, 1]]),
    )


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("grid_size", [2, 4, 5])
def test_identity(grid_size, align_corners):
    src = ts.lattice(grid_size, dtype=torch.float64).expand(2, -1, -1)
    size = (2, 1, 7, 9)
    torch.testing.assert_close(
        ts.tps_grid(src, size, align_corners=align_corners),
        ts.identity_grid(size, align_corners=align_corners, dtype=torch.float64),
        atol=1e-12, rtol=0,
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_affine_source_points_give_exactly_that_affine_grid(dtype, tol):
    theta = torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(3, 2, 3, dtype=torch.float64)
    lat = ts.lattice(4, dtype=torch.float64)
    src = lat @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)  # (3, 16, 2)
    size = (3, 1, 11, 13)
    torch.testing.assert_close(
        ts.tps_grid(src.to(dtype), size).double(), ts.affine_grid(theta, size),
        atol=tol, rtol=0,
    )


def _scipy_tps(target, source, size, align_corners):
    """Independent reference: SciPy's thin-plate-spline RBF interpolant with a linear term."""
    h, w = size[2:]
    grid = ts.identity_grid((1, 1, h, w), align_corners=align_corners, dtype=torch.float64)
    pts = grid.reshape(-1, 2).numpy()
    out = []
    for n in range(source.shape[0]):
        tgt = target if target.dim() == 2 else target[n]
        f = RBFInterpolator(tgt.numpy(), source[n].numpy(), kernel="thin_plate_spline", degree=1)
        out.append(torch.from_numpy(f(pts)).reshape(h, w, 2))
    return torch.stack(out)


@pytest.mark.parametrize("align_corners", [False, True])
def test_default_lattice_matches_scipy(align_corners):
    src = ts.lattice(4, dtype=torch.float64) + 0.15 * torch.randn(3, 16, 2, dtype=torch.float64)
    size = (3, 2, 9, 10)
    ref = _scipy_tps(ts.lattice(4, dtype=torch.float64), src, size, align_corners)
    torch.testing.assert_close(ts.tps_grid(src, size, align_corners=align_corners), ref,
                               atol=1e-9, rtol=0)
    torch.testing.assert_close(ts.tps_grid(src.float(), size, align_corners=align_corners),
                               ref.float(), atol=2e-5, rtol=0)


def test_custom_and_per_image_targets_match_scipy():
    tgt = torch.rand(7, 2, dtype=torch.float64) * 2 - 1
    src = tgt + 0.1 * torch.randn(2, 7, 2, dtype=torch.float64)
    size = (2, 1, 6, 8)
    torch.testing.assert_close(ts.tps_grid(src, size, target_points=tgt),
                               _scipy_tps(tgt, src, size, False), atol=1e-9, rtol=0)
    per_image = torch.rand(2, 7, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(ts.tps_grid(src, size, target_points=per_image),
                               _scipy_tps(per_image, src, size, False), atol=1e-9, rtol=0)


def test_gradcheck_source_and_target_points():
    src = (ts.lattice(3, dtype=torch.float64) + 0.1 * torch.randn(2, 9, 2, dtype=torch.float64))
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: ts.tps_grid(s, (2, 1, 4, 5)), (src,))
    tgt = (ts.lattice(3, dtype=torch.float64) + 0.05 * torch.randn(9, 2, dtype=torch.float64))
    tgt.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: ts.tps_grid(src.detach(), (2, 1, 4, 5), target_points=t), (tgt,)
    )


def test_target_solve_is_cached_and_usable_after_inference_mode():
    _lattice_mapping.cache_clear()
    with torch.inference_mode():
        ts.tps_grid(ts.lattice(4)[None], (1, 1, 8, 8))
    src = ts.lattice(4)[None].clone().requires_grad_(True)
    ts.tps_grid(src, (1, 1, 8, 8)).sum().backward()  # would fail on an inference tensor
    assert src.grad is not None
    info = _lattice_mapping.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_tps_errors():
    with pytest.raises(ValueError, match="K = g \\* g control points .* got K = 5"):
        ts.tps_grid(torch.zeros(1, 5, 2), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="got K = 1"):
        ts.tps_grid(torch.zeros(1, 1, 2), (1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"source_points must have shape \(N, K, 2\), got \(1, 4, 3\)"):
        ts.tps_grid(torch.zeros(1, 4, 3), (1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"target_points must have shape \(4, 2\) or \(N, 4, 2\)"):
        ts.tps_grid(torch.zeros(1, 4, 2), (1, 1, 4, 4), target_points=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="target_points has batch size 3 but source_points has batch size 1"):
        ts.tps_grid(torch.zeros(1, 4, 2), (1, 1, 4, 4), target_points=torch.rand(3, 4, 2))
    collinear = torch.stack([torch.linspace(-1, 1, 4), torch.zeros(4)], dim=1)
    with pytest.raises(ValueError, match="singular TPS system.*non-collinear"):
        ts.tps_grid(torch.zeros(1, 4, 2), (1, 1, 4, 4), target_points=collinear)
    with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
        ts.lattice(1)
