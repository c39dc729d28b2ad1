"""The fused warps as PyTorch operators: opcheck, torch.compile(fullgraph=True),
torch.export with a dynamic batch, autocast."""

import pytest
import torch
from torch.export import Dim

import torchstn as ts
from torchstn.ops.numba import backend as numba_backend

FAMILIES_2D = ["translation", "attention", "rotation", "similarity", "affine", "projective",
               "tps"]
MATRIX_FAMILIES = FAMILIES_2D[:-1]


def _theta(n, e, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(3, dtype=torch.float64).reshape(9)[:e]
    return (eye + 0.2 * torch.randn(n, e, generator=g, dtype=torch.float64)).to(dtype)


def _matrix(n, projective, dtype=torch.float64, seed=0):
    """(N, 3, 3) matrices near the identity (the last row the identity's unless
    ``projective``)."""
    m = _theta(n, 9, torch.float64, seed).view(n, 3, 3)
    if not projective:
        m[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return m.to(dtype)


def _numba_samples():
    """(args) of torchstn::numba_warp (the schema of torchstn::triton_warp): affine and
    projective matrices, both dtypes, modes and paddings, every requires_grad
    combination, and one image with a non-finite entry."""
    samples = []
    for projective, dtype, nearest, border, align, grads in [
        (False, torch.float64, False, False, False, (True, True)),
        (True, torch.float64, False, True, True, (True, True)),
        (False, torch.float32, True, False, True, (False, True)),
        (False, torch.float32, False, True, False, (True, False)),
        (True, torch.float64, False, False, False, (False, False)),
    ]:
        x = torch.rand(3, 2, 5, 6, dtype=dtype).requires_grad_(grads[0])
        m = _matrix(3, projective, dtype).requires_grad_(grads[1])
        samples.append((x, m, 4, 7, nearest, border, align, projective))
    m = _matrix(2, False)
    m[1, 0, 0] = float("nan")
    samples.append((torch.rand(2, 1, 4, 4, dtype=torch.float64, requires_grad=True),
                    m.requires_grad_(True), 3, 3, False, False, False, False))
    return samples


@pytest.mark.parametrize("index", range(len(_numba_samples())))
def test_opcheck_numba_warp(index):
    args = _numba_samples()[index]
    utils = ("test_schema", "test_autograd_registration", "test_faketensor",
             "test_aot_dispatch_dynamic")
    if not torch.isfinite(args[1]).all():
        utils = utils[:-1]  # its comparison of outputs takes NaN for a mismatch
    torch.library.opcheck(torch.ops.torchstn.numba_warp.default, args, test_utils=utils)


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True), (False, False)])
def test_opcheck_numba_warp_backward(need):
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    m = _matrix(2, True)
    grad_out = torch.randn(2, 3, 4, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.torchstn.numba_warp_backward.default,
                          (grad_out, x, m, False, True, False, True, *need))


def test_triton_ops_schema_fake_and_autograd_registration_in_the_interpreter():
    """Under the interpreter the Triton launches cannot be traced (see gpu-check.sh for
    the full opcheck on CUDA): schema, fake tensors and autograd registration here."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("on CUDA, scripts/gpu-check.sh runs the full opcheck")
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    from torchstn.ops.triton.backend import register_ops

    register_ops()
    x = torch.rand(2, 3, 5, 6, requires_grad=True)
    m = ts.get_transform("affine").matrix(_theta(2, 6, torch.float32)).requires_grad_(True)
    torch.library.opcheck(torch.ops.torchstn.triton_warp.default,
                          (x, m, 4, 7, False, True, False, False), test_utils=utils)
    torch.library.opcheck(torch.ops.torchstn.triton_warp_backward.default,
                          (torch.randn(2, 3, 4, 7), x.detach(), m.detach(), False, True,
                           False, False, True, True), test_utils=utils)
    # The anti-aliased pair: a shrink of 2 to 3 points per output pixel, kept small.
    torch.library.opcheck(torch.ops.torchstn.triton_warp_antialias.default,
                          (x, m, 2, 3, False, True, False, False), test_utils=utils)
    torch.library.opcheck(torch.ops.torchstn.triton_warp_antialias_backward.default,
                          (torch.randn(2, 3, 2, 3), x.detach(), m.detach(), False, True,
                           False, False, True, True), test_utils=utils)


def test_op_errors_name_the_argument():
    x, m = torch.rand(1, 1, 4, 4), torch.eye(3).unsqueeze(0)
    with pytest.raises(ValueError, match=r"numba_warp: matrix must be a floating \(N, 3, 3\) "
                                         r"tensor with N = 1, got \(1, 6\)"):
        torch.ops.torchstn.numba_warp(x, torch.zeros(1, 6), 4, 4, False, False, False, False)
    with pytest.raises(ValueError, match=r"input must be a \(N, C, H, W\) float32 or float64 "
                                         r"tensor, got \(1, 1, 4, 4\) torch.float16"):
        torch.ops.torchstn.numba_warp(x.half(), m, 4, 4, False, False, False, False)
    with pytest.raises(ValueError, match="matrix must be a floating"):
        torch.ops.torchstn.numba_warp(x, m.long(), 4, 4, False, False, False, False)
    with pytest.raises(ValueError, match=r"grad_out must be \(N, C, out_h, out_w\) with "
                                         r"\(N, C\) = \(1, 1\) of input, got \(2, 1, 4, 4\)"):
        torch.ops.torchstn.numba_warp_backward(torch.zeros(2, 1, 4, 4), x, m, False, False,
                                               False, False, True, True)
    with pytest.raises(ValueError, match="out_h and out_w must be >= 1, got 0 and 4"):
        torch.ops.torchstn.numba_warp(x, m, 0, 4, False, False, False, False)


def test_both_fused_operators_have_one_schema():
    from torchstn.ops.triton.backend import register_ops

    pytest.importorskip("triton")
    register_ops()
    numba = torch.ops.torchstn.numba_warp.default._schema
    triton = torch.ops.torchstn.triton_warp.default._schema
    assert [(a.name, str(a.type)) for a in numba.arguments] == \
        [(a.name, str(a.type)) for a in triton.arguments]
    assert [a.name for a in numba.arguments][:2] == ["input", "matrix"]
    back_n = torch.ops.torchstn.numba_warp_backward.default._schema
    back_t = torch.ops.torchstn.triton_warp_backward.default._schema
    assert [(a.name, str(a.type)) for a in back_n.arguments] == \
        [(a.name, str(a.type)) for a in back_t.arguments]


def test_the_tps_constant_mark_is_the_one_dynamo_sets():
    from torchstn.tps import _lattice_inverse

    marked = torch.compiler.assume_constant_result(lambda: 0)
    assert vars(marked) == {"_dynamo_marked_constant": True}
    assert _lattice_inverse._dynamo_marked_constant is True


def _stn(family, backend, seed=0, **kw):
    torch.manual_seed(seed)
    stn = ts.SpatialTransformer(None, family, in_channels=2, loc_features=64,
                                backend=backend, **kw)
    with torch.no_grad():  # away from the identity, so the warp does something
        stn.head.weight.normal_(0, 0.02)
    return stn


class _Graphs:
    """A torch.compile backend (AOTAutograd, eager kernels) that keeps the forward and
    backward graphs it was given."""

    def __init__(self):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.graphs = []

        def keep(gm, example_inputs):
            self.graphs.append(gm)
            return make_boxed_func(gm.forward)

        self.backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)

    def targets(self):
        return [{str(node.target) for node in g.graph.nodes if node.op == "call_function"}
                for g in self.graphs]


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("family", FAMILIES_2D)
def test_compile_fullgraph_equals_eager_and_keeps_the_fused_op(family, backend):
    torch._dynamo.reset()
    stn = _stn(family, backend, out_size=(9, 7))
    x = torch.rand(3, 2, 12, 10, requires_grad=True)
    graphs = _Graphs()
    compiled = torch.compile(stn, fullgraph=True, backend=graphs.backend)
    out = compiled(x)
    ref = stn(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *stn.parameters()], g)
    want = torch.autograd.grad(ref, [x, *stn.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    forward, backward = graphs.targets()
    fused = backend == "auto" and family != "tps"  # auto: numba where it applies
    assert ("torchstn.numba_warp.default" in forward) == fused
    assert ("torchstn.numba_warp_backward.default" in backward) == fused
    if not fused:
        assert "aten.grid_sampler_2d.default" in forward


def test_compile_with_inductor_runs_the_numba_kernels(monkeypatch):
    # As on a CI machine: Inductor refuses a fallback to an operator that has a
    # decomposition in PyTorch's table when CI is set (ours are kept out of it).
    monkeypatch.setenv("CI", "true")
    torch._dynamo.reset()
    calls = []
    for name in ("fused_forward", "fused_backward"):
        real = getattr(numba_backend, name)
        monkeypatch.setattr(numba_backend, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    stn = _stn("affine", "numba")
    x = torch.rand(4, 2, 16, 16)
    compiled = torch.compile(stn, fullgraph=True)
    compiled(x).sum().backward()  # compiles; tracing uses the fake kernels only
    calls.clear()
    out = compiled(x)
    assert calls == ["fused_forward"]
    out.sum().backward()
    assert calls == ["fused_forward", "fused_backward"]
    torch.testing.assert_close(out, stn(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("family", FAMILIES_2D)
def test_export_with_a_dynamic_batch(family, backend):
    stn = _stn(family, backend).eval()
    x = torch.rand(3, 2, 12, 10)
    program = torch.export.export(stn, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert ("torchstn.numba_warp.default" in targets) == (backend == "auto" and family != "tps")
    for n in (2, 5):
        other = torch.rand(n, 2, 12, 10)
        torch.testing.assert_close(program.module()(other), stn(other), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["affine", "rotation"])
def test_export_keeps_the_nonfinite_rule(family):
    """One image's parameters are infinite (its input holds an inf): that image alone
    comes out NaN, in the exported program as in eager."""
    stn = ts.SpatialTransformer(torch.nn.Flatten(), family, loc_features=2 * 36,
                                backend="auto").eval()
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.01)
    x = torch.rand(2, 2, 6, 6)
    program = torch.export.export(stn, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
    other = torch.rand(3, 2, 6, 6)
    other[1, 0, 0, 0] = float("inf")
    with torch.no_grad():
        got, want = program.module()(other), stn(other)
    assert torch.isnan(got[1]).all() and torch.isfinite(got[[0, 2]]).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_autocast_does_not_lower_the_warp(backend):
    """Under bfloat16 autocast the warp runs in the input's precision: equal to the
    float32 warp by the same (bfloat16-rounded) parameters, in the input's dtype."""
    x = torch.rand(4, 3, 20, 20)
    # Similarity: its matrix is built by torch operations, which autocast would lower.
    p = ts.get_transform("similarity").identity() + 0.1 * torch.randn(4, 4)
    p16 = p.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ts.warp(x, p16, "similarity", backend=backend)
    ref = ts.warp(x, p16.float(), "similarity", backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    # A bfloat16 input (a feature map made under autocast) stays bfloat16.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = ts.warp(x.bfloat16(), p16, "similarity", backend="auto")
    assert out16.dtype == torch.bfloat16
