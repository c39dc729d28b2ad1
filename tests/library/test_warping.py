import re

import pytest
import torch

import torchstn as ts
from torchstn import warping as warp_module
from torchstn._registry import Registry

FAMILIES_2D = [n for n in ts.list_transforms() if ts.get_transform(n).ndim == 2]


@pytest.mark.parametrize("name", FAMILIES_2D)
@pytest.mark.parametrize("align_corners", [False, True])
def test_warp_is_grid_then_sample_with_any_out_size(name, align_corners):
    tf = ts.get_transform(name)
    x = torch.rand(3, 4, 10, 12, dtype=torch.float64)
    p = tf.identity(dtype=x.dtype) + 0.2 * torch.randn(3, tf.num_params, dtype=x.dtype)
    out = ts.warp(x, p, name, out_size=(7, 15), mode="bicubic", padding_mode="reflection",
                  align_corners=align_corners, backend="torch")
    grid = tf.grid(p, (3, 4, 7, 15), align_corners=align_corners)
    ref = ts.sample(x, grid, mode="bicubic", padding_mode="reflection",
                    align_corners=align_corners)
    assert out.shape == (3, 4, 7, 15)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2),
                                       (torch.float16, 1e-3)])
@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_warp_dtypes(dtype, tol, name):
    tf = ts.get_transform(name)
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    p = tf.identity(dtype=torch.float64) + 0.1 * torch.randn(2, tf.num_params, dtype=torch.float64)
    ref = ts.warp(x, p, name)
    out = ts.warp(x.to(dtype), p.to(dtype), name)
    assert out.dtype == dtype
    # Half-precision inputs are warped in float32: the error is the rounding of input,
    # parameters and output, not of the sample positions.
    exact = ts.warp(x.to(dtype).double(), p.to(dtype).double(), name)
    torch.testing.assert_close(out.double(), exact, atol=tol + 1e-6, rtol=tol)
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0)


@pytest.mark.parametrize("mode", ts.MODES)
@pytest.mark.parametrize("padding", ts.PADDING_MODES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", FAMILIES_2D)
def test_nonfinite_params_give_nan_for_that_image_only(name, mode, padding, bad):
    tf = ts.get_transform(name)
    x = torch.rand(3, 2, 6, 6)
    p = tf.identity().repeat(3, 1)
    p[1, -1] = bad
    p.requires_grad_(True)
    out = ts.warp(x, p, name, mode=mode, padding_mode=padding)
    assert torch.isnan(out[1]).all()
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]], atol=1e-5, rtol=0)
    out[[0, 2]].sum().backward()
    assert torch.isfinite(p.grad).all()
    assert torch.equal(p.grad[1], torch.zeros_like(p.grad[1]))


def test_5d_warp_and_out_size():
    x = torch.rand(2, 3, 4, 5, 6)
    p = ts.get_transform("affine3d").identity().expand(2, -1)
    out = ts.warp(x, p, "affine3d", out_size=(2, 3, 4), align_corners=True)
    grid = ts.affine_grid(p.view(2, 3, 4), (2, 3, 2, 3, 4), align_corners=True)
    torch.testing.assert_close(out, ts.sample(x, grid, align_corners=True))


class _Refuses(ts.Backend):
    name = "refuses"

    def unsupported(self, call):
        return f"only bilinear, got {call.mode!r}"

    def __call__(self, call):  # pragma: no cover - never selected
        raise AssertionError


def test_backend_selection(monkeypatch):
    assert ts.list_backends()[-1] == "torch"
    backends = Registry("backend")
    backends.add("refuses", _Refuses())
    for name, backend in warp_module.BACKENDS.items():
        backends.add(name, backend)
    monkeypatch.setattr(warp_module, "BACKENDS", backends)
    x, p = torch.rand(1, 1, 4, 4), torch.zeros(1, 2)
    # auto skips a backend that refuses the call and falls back to the reference path.
    torch.testing.assert_close(ts.warp(x, p, "translation", mode="nearest"), x)
    with pytest.raises(ValueError, match="backend 'refuses' cannot run this warp: only bilinear, got 'nearest'"):
        ts.warp(x, p, "translation", mode="nearest", backend="refuses")


def test_warp_errors():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"params must have shape \(N, 6\) for transform 'affine', got \(2, 2, 3\)"):
        ts.warp(x, torch.zeros(2, 2, 3), "affine")
    with pytest.raises(ValueError, match="params has batch size 3 but input has batch size 2"):
        ts.warp(x, torch.zeros(3, 6), "affine")
    with pytest.raises(ValueError, match=r"out_size must be 2 positive ints \(H, W\), got \(4, 4, 4\)"):
        ts.warp(x, torch.zeros(2, 6), "affine", out_size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"out_size must be 3 positive ints \(D, H, W\), got \(4, 4\)"):
        ts.warp(torch.rand(2, 1, 4, 4, 4), torch.zeros(2, 12), "affine3d", out_size=(4, 4))
    with pytest.raises(ValueError, match=r"input must be \(N, C, D, H, W\), got shape \(2, 1, 4, 4\)"):
        ts.warp(x, torch.zeros(2, 12), "affine3d")
    with pytest.raises(ValueError, match=r"input must be \(N, C, H, W\), got shape \(2, 1, 4, 4, 4\)"):
        ts.warp(torch.rand(2, 1, 4, 4, 4), torch.zeros(2, 6), "affine")
    with pytest.raises(TypeError, match="input must be a floating-point tensor.*torch.int32"):
        ts.warp(torch.zeros(2, 1, 4, 4, dtype=torch.int32), torch.zeros(2, 6), "affine")
    with pytest.raises(TypeError, match="params must be a floating-point tensor.*torch.int64"):
        ts.warp(x, torch.zeros(2, 6, dtype=torch.long), "affine")
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {['auto', *ts.list_backends()]}, got 'cuda'")):
        ts.warp(x, torch.zeros(2, 6), "affine", backend="cuda")
    with pytest.raises(ValueError, match="transform must be one of .* got 'affine2d'"):
        ts.warp(x, torch.zeros(2, 6), "affine2d")
    with pytest.raises(TypeError, match="transform must be a family name .* got int"):
        ts.warp(x, torch.zeros(2, 6), 6)
    with pytest.raises(ValueError, match="mode 'bicubic' supports 4-D input"):
        ts.warp(torch.rand(2, 1, 4, 4, 4), torch.zeros(2, 12), "affine3d", mode="bicubic")
