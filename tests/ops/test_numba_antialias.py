"""The fused anti-aliased CPU kernels (backend="numba", antialias=True) against the
reference path (backend="torch": the grid, then torchstn.antialias.antialiased_sample)."""

import math

import pytest
import torch
from helpers import fused_and_reference

import torchstn as ts
from torchstn import antialias
from torchstn.ops.numba import antialias as kernels_antialias
from torchstn.ops.numba import backend as numba_backend

FAMILIES = ["attention", "rotation", "affine", "projective"]


def _params(family, n, dtype, seed=0):
    """Parameters of a warp that shrinks (2x to 4x, the rotation by its output size)
    and turns, different per image."""
    g = torch.Generator().manual_seed(seed)
    s = 2.0 + 2.0 * torch.rand(n, generator=g, dtype=torch.float64)
    a = 0.6 * torch.rand(n, generator=g, dtype=torch.float64) - 0.3
    t = 0.2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.1
    if family == "attention":
        p = torch.stack([s, t[:, 0], t[:, 1]], 1)  # (scale, tx, ty): a shrink for s > 1
    elif family == "rotation":
        p = torch.stack([a, t[:, 0], t[:, 1]], 1)
    else:
        c, si = s * torch.cos(a), s * torch.sin(a)
        p = torch.stack([c, -si, t[:, 0], si, c, t[:, 1]], 1)
        if family == "projective":
            p = torch.cat([p, 0.3 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.15],
                          1)
    return p.to(dtype)


def _image(n, c, h, w, dtype, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64).to(dtype)


def _check(x, p, family, atol, **kw):
    g = torch.randn(x.shape[0], x.shape[1], *kw["out_size"],
                    generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (out, gx, gp), (ref, rgx, rgp) = fused_and_reference("numba", x, p, family,
                                                         g.to(x.dtype), antialias=True, **kw)
    assert (out - ref).abs().max() <= atol
    assert (gx - rgx).abs().max() <= atol
    assert (gp - rgp).abs().max() <= 20 * atol * rgp.abs().max().clamp_min(1.0)
    return out


@pytest.fixture(params=["serial", "parallel"])
def kernels(request, monkeypatch):
    """Run small warps through the serial kernels (the default) or the parallel ones."""
    if request.param == "parallel":
        monkeypatch.setattr(numba_backend, "SERIAL_BELOW", 0)
    return request.param


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_the_reference_float32(family, padding_mode, align_corners, kernels):
    x = _image(3, 3, 40, 36, torch.float32)
    # Up to 4 x 4 points per output pixel, several counts in one image (projective).
    _check(x, _params(family, 3, torch.float32), family, 2e-5, out_size=(11, 9),
           padding_mode=padding_mode, align_corners=align_corners)


@pytest.mark.parametrize("channels", [1, 6])
def test_footprints_inside_the_image_match_the_reference(channels, kernels):
    """A zoom out within the image: most footprints lie inside it, where the kernels skip
    the clips and checks (and take the channels four at a time); the edge pixels' do not."""
    x = _image(2, channels, 48, 52, torch.float32)
    c, s = 0.8 * math.cos(0.3), 0.8 * math.sin(0.3)
    p = torch.tensor([[c, -s, 0.05, s, c, -0.04], [0.7, 0.1, -0.1, -0.05, 0.75, 0.0]])
    out = _check(x, p, "affine", 2e-5, out_size=(9, 8), padding_mode="zeros")
    border = _check(x, p, "affine", 2e-5, out_size=(9, 8), padding_mode="border")
    # Inside, the padding cannot matter; at the edges it does.
    assert torch.equal(out[..., 2:-2, 2:-2], border[..., 2:-2, 2:-2])
    assert not torch.equal(out, border)


@pytest.mark.slow
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("family", ["affine", "projective"])
def test_matches_the_reference_float64(family, padding_mode, kernels):
    """float64 (a separate compile of the kernels): agreement to rounding."""
    x = _image(2, 2, 30, 34, torch.float64)
    _check(x, _params(family, 2, torch.float64, seed=3), family, 1e-12, out_size=(7, 8),
           padding_mode=padding_mode)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["affine", "projective"])
def test_gradcheck_float64(family):
    x = _image(1, 2, 12, 11, torch.float64).requires_grad_()
    p = _params(family, 1, torch.float64, seed=4).requires_grad_()

    def f(x, p):
        return ts.warp(x, p, family, out_size=(4, 3), antialias=True, backend="numba")

    assert torch.autograd.gradcheck(f, (x, p))


def test_more_than_max_samples_and_a_one_pixel_axis():
    """A 300 x 4 image read into 3 x 1: 100 pixels a sample along x, capped at
    MAX_SAMPLES points; nothing to average along an axis of one output pixel."""
    x = _image(2, 2, 4, 300, torch.float32)
    p = ts.get_transform("affine").identity().expand(2, 6)
    _check(x, p, "affine", 2e-5, out_size=(1, 3))
    assert kernels_antialias.MAX_SAMPLES == antialias.MAX_SAMPLES
    assert kernels_antialias.SLACK == antialias._SLACK


def test_integer_shrink_is_the_area_average():
    x = _image(2, 3, 48, 64, torch.float32)
    p = ts.get_transform("attention").identity().expand(2, 3)
    out = ts.warp(x, p, "attention", out_size=(12, 16), antialias=True, backend="numba")
    torch.testing.assert_close(out, torch.nn.functional.avg_pool2d(x, 4), rtol=0, atol=1e-6)


def test_deterministic_whatever_the_threads_and_the_split(monkeypatch):
    x = _image(3, 5, 64, 64, torch.float32)
    p = _params("projective", 3, torch.float32)
    g = torch.randn(3, 5, 16, 16)
    results = []
    for serial_below, threads in ((1 << 30, 1), (0, 1), (0, 2)):
        monkeypatch.setattr(numba_backend, "SERIAL_BELOW", serial_below)
        torch.set_num_threads(threads)
        xi, pi = x.clone().requires_grad_(), p.clone().requires_grad_()
        out = ts.warp(xi, pi, "projective", out_size=(16, 16), antialias=True,
                      backend="numba")
        results.append((out, *torch.autograd.grad(out, (xi, pi), g)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_nonfinite_parameters_give_that_image_nan_and_zero_gradients():
    x = _image(3, 2, 32, 32, torch.float32)
    p = _params("affine", 3, torch.float32)
    p[1, 2] = float("nan")
    xi, pi = x.clone().requires_grad_(), p.clone().requires_grad_()
    out = ts.warp(xi, pi, "affine", out_size=(8, 8), antialias=True, backend="numba")
    assert out[1].isnan().all() and out[[0, 2]].isfinite().all()
    gx, gp = torch.autograd.grad(out[[0, 2]].sum(), (xi, pi))
    assert (gx[1] == 0).all() and (gp[1] == 0).all() and (gp[0] != 0).any()
    ref = ts.warp(x[[0, 2]], p[[0, 2]], "affine", out_size=(8, 8), antialias=True,
                  backend="torch")
    torch.testing.assert_close(out[[0, 2]], ref, rtol=0, atol=2e-5)


def test_auto_picks_the_kernels_and_nearest_stays_on_the_reference_path(monkeypatch):
    calls = []
    real = numba_backend.fused_forward_antialias
    monkeypatch.setattr(numba_backend, "fused_forward_antialias",
                        lambda *a: calls.append(1) or real(*a))
    x = _image(1, 1, 16, 16, torch.float32)
    p = ts.get_transform("rotation").identity()[None]
    ts.warp(x, p, "rotation", out_size=(4, 4), antialias=True)
    assert calls == [1]
    near = ts.warp(x, p, "rotation", out_size=(4, 4), antialias=True, mode="nearest")
    torch.testing.assert_close(near, ts.warp(x, p, "rotation", out_size=(4, 4),
                                             antialias=True, mode="nearest", backend="torch"))
    assert calls == [1]
    with pytest.raises(ValueError, match="backend 'numba' cannot run this warp: antialias "
                                         "with mode 'nearest' runs on backend 'torch'"):
        ts.warp(x, p, "rotation", antialias=True, mode="nearest", backend="numba")
    with pytest.raises(ValueError, match="numba_warp_antialias: nearest must be False"):
        torch.ops.torchstn.numba_warp_antialias(x, torch.eye(3)[None], 4, 4, True, False,
                                                False, False)


@pytest.mark.parametrize("projective", [False, True])
def test_opcheck(projective):
    """Schema, fake tensors, autograd registration and AOT dispatch of both operators
    (float32: the float64 kernels compile only under -m slow)."""
    x = _image(2, 3, 20, 18, torch.float32).requires_grad_()
    m = ts.get_transform("projective").matrix(_params("projective", 2, torch.float32))
    if not projective:
        m[:, 2] = torch.tensor([0.0, 0.0, 1.0])
    m.requires_grad_()
    torch.library.opcheck(torch.ops.torchstn.numba_warp_antialias.default,
                          (x, m, 5, 4, False, projective, True, projective))
    for need in ((True, True), (False, True), (True, False)):
        torch.library.opcheck(torch.ops.torchstn.numba_warp_antialias_backward.default,
                              (torch.randn(2, 3, 5, 4), x.detach(), m.detach(), False,
                               projective, True, projective, *need))


def _stn(**kw):
    torch.manual_seed(0)
    stn = ts.SpatialTransformer(None, "affine", in_channels=2, loc_features=64,
                                out_size=(8, 6), antialias=True, **kw)
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.02)
        stn.head.bias.copy_(torch.tensor([2.5, 0.3, 0.0, -0.2, 2.0, 0.1]))  # a zoom out
    return stn


def test_compile_fullgraph_keeps_the_fused_op_and_equals_eager():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    stn = _stn()
    x = torch.rand(3, 2, 32, 24, requires_grad=True)
    counter = CompileCounterWithBackend("aot_eager")
    out = torch.compile(stn, fullgraph=True, backend=counter)(x)
    ref = stn(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    got = torch.autograd.grad(out.square().sum(), [x, *stn.parameters()])
    want = torch.autograd.grad(ref.square().sum(), [x, *stn.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1  # one graph: no break at the data-dependent counts
    targets = {str(n.target) for n in counter.graphs[0].graph.nodes}
    assert any("numba_warp_antialias" in t for t in targets)


def test_torch_export_with_a_dynamic_batch_and_a_clear_onnx_refusal(tmp_path):
    stn = _stn().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(stn, (torch.rand(3, 2, 32, 24),),
                                  dynamic_shapes={"x": {0: batch}})
    x5 = torch.rand(5, 2, 32, 24)
    torch.testing.assert_close(program.module()(x5), stn(x5), rtol=0, atol=1e-6)
    pytest.importorskip("onnxscript")
    from torchstn.export import export_onnx

    with pytest.raises(NotImplementedError, match="antialias=True does not export to ONNX"):
        export_onnx(stn, (torch.rand(3, 2, 32, 24),), tmp_path / "aa.onnx")
    assert not (tmp_path / "aa.onnx").exists()


def test_the_zoom_out_of_a_whole_image_reads_every_pixel():
    """What anti-aliasing is for: a 128 px image read whole into 16 px. The plain warp
    reads 4 of each 8 x 8 block's pixels (its output follows the pixels it hits);
    the anti-aliased one their mean, as avg_pool2d."""
    x = _image(1, 1, 128, 128, torch.float32)
    p = ts.get_transform("attention").identity()[None]
    aa = ts.warp(x, p, "attention", out_size=(16, 16), antialias=True)
    plain = ts.warp(x, p, "attention", out_size=(16, 16))
    pooled = torch.nn.functional.avg_pool2d(x, 8)
    assert (aa - pooled).abs().max() < 1e-5
    assert (plain - pooled).abs().mean() > 50 * (aa - pooled).abs().mean()
    assert math.isclose(float(aa.mean()), float(x.mean()), rel_tol=1e-5)
