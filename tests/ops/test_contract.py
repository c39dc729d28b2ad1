"""One contract that every warp backend keeps, checked for each (torch, numba, triton in
Triton's interpreter): fixed cases, and property-based fuzzing (hypothesis) against the
reference path computed in float64.

Tolerances (output values in [0, 1], upstream gradients ~ N(0, 1)):

- float64: outputs 1e-10, gradients 1e-8 of their largest entry (at least 1);
- float32: outputs 2e-5, input gradients 1e-4 and parameter gradients 1e-3 of their
  largest entry (at least 1);
- float16 / bfloat16 (triton): outputs and input gradients 4 and 8 roundings of the dtype;
  parameter gradients (float32) 2e-3 of their largest entry.

Where the answer is ambiguous it is not compared: output pixels whose sample point is
within rounding of a pixel boundary (the bilinear gradient has a kink there; nearest
sampling has a tie) or of the projective horizon get a zero upstream gradient, and
their values are compared only for bilinear sampling away from the horizon.
"""

import math
import os

import pytest
import torch
from helpers import assert_fused_refusals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchstn as ts
from torchstn.grids import FAR

MATRIX_FAMILIES = ["translation", "attention", "rotation", "similarity", "affine", "projective"]


def _available(name):
    if name == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
    return True


BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not _available(b), reason=f"no {b}"))
            for b in ("torch", "numba", "triton")]
DTYPES = {"torch": [torch.float32, torch.float64], "numba": [torch.float32, torch.float64],
          "triton": [torch.float32, torch.float16, torch.bfloat16]}
FAMILIES = {"torch": MATRIX_FAMILIES + ["tps"], "numba": MATRIX_FAMILIES,
            "triton": MATRIX_FAMILIES}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _device(backend):
    return DEVICE if backend == "triton" else "cpu"


# --- Fixed cases -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_returns_the_input(backend):
    x = torch.rand(2, 3, 7, 5, device=_device(backend))
    for family in FAMILIES[backend]:
        p = ts.get_transform(family).identity(device=x.device).expand(2, -1)
        for mode in ("bilinear", "nearest"):
            out = ts.warp(x, p, family, mode=mode, backend=backend)
            torch.testing.assert_close(out, x, rtol=0, atol=1e-6, msg=f"{family} {mode}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_rule(backend):
    """An image with a NaN or inf parameter comes out all NaN with zero gradients; the
    other images are as if alone."""
    dev = _device(backend)
    for family in FAMILIES[backend]:
        tf = ts.get_transform(family)
        x = torch.rand(3, 2, 6, 5, device=dev, requires_grad=True)
        p = (tf.identity(device=dev) + 0.1 * torch.randn(3, tf.num_params, device=dev))
        p[1, 0] = float("nan")
        p[2, -1] = float("inf")
        p = p.detach().requires_grad_(True)
        out = ts.warp(x, p, family, backend=backend)
        assert torch.isnan(out[1:]).all(), family
        alone = ts.warp(x[:1], p[:1], family, backend=backend)
        torch.testing.assert_close(out[:1], alone, rtol=0, atol=0)
        gx, gp = torch.autograd.grad(out[:1].sum() + out[1:].nan_to_num().sum(), (x, p))
        assert (gx[1:] == 0).all() and (gp[1:] == 0).all(), family
        assert torch.isfinite(gx).all() and torch.isfinite(gp).all(), family


@pytest.mark.parametrize("backend", BACKENDS)
def test_bit_identical_run_to_run(backend):
    dev = _device(backend)
    x = torch.rand(2, 17, 9, 8, device=dev)
    p = ts.get_transform("projective").identity(device=dev) + 0.1 * torch.randn(2, 8, device=dev)
    g = torch.randn(2, 17, 6, 7, device=dev)
    runs = []
    for _ in range(2):
        xi, pi = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
        out = ts.warp(xi, pi, "projective", out_size=(6, 7), backend=backend)
        runs.append((out, *torch.autograd.grad(out, (xi, pi), g)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] != "torch"])
def test_fused_backends_refuse_clearly(backend):
    dev = _device(backend)
    x = torch.rand(1, 1, 4, 4, device=dev)
    assert_fused_refusals(backend, x, torch.zeros(1, 6, device=dev))


# --- Fuzzing ------------------------------------------------------------------------------


@st.composite
def warp_cases(draw, backend):
    family = draw(st.sampled_from(FAMILIES[backend]))
    dtype = draw(st.sampled_from(DTYPES[backend]))
    n = draw(st.integers(1, 3))
    c = draw(st.sampled_from([1, 2, 3, 5, 17]))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    out_size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    tf = ts.get_transform(family)
    # Parameters: near the identity, or extreme (zooms by up to e^8 either way,
    # translations by up to 1e3 image widths, near-singular and horizon-crossing
    # homographies).
    kind = draw(st.sampled_from(["near", "zoom", "far", "horizon"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    p = tf.identity(dtype=torch.float64).repeat(n, 1)
    p = p + 0.3 * torch.randn(n, tf.num_params, generator=g, dtype=torch.float64)
    if kind == "zoom" and family in ("attention", "similarity"):
        p[:, 0] = draw(st.floats(-8, 8))
    elif kind == "zoom" and family in ("affine", "projective"):
        s = math.exp(draw(st.floats(-8, 8)))
        p[:, [0, 4]] *= s
        p[:, [1, 3]] *= s
    elif kind == "far" and family != "tps":
        t = draw(st.floats(-1e3, 1e3))
        cols = {"translation": [0, 1], "attention": [1, 2], "rotation": [1, 2],
                "similarity": [2, 3], "affine": [2, 5], "projective": [2, 5]}[family]
        p[:, cols] += t
    elif kind == "horizon" and family == "projective":
        p[:, 6:] = 1.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    elif family == "projective":
        p[:, 6:] *= 0.3
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    grads = draw(st.sampled_from([(True, True), (True, False), (False, True), (False, False)]))
    # numba: the serial kernels (what small warps use) or the parallel ones.
    parallel = backend == "numba" and draw(st.booleans())
    return dict(family=family, dtype=dtype, x_shape=(n, c, h, w), out_size=out_size,
                parallel=parallel,
                params=p, layout=layout, grads=grads, seed=int(g.initial_seed()),
                mode=draw(st.sampled_from(["bilinear", "nearest"])),
                padding_mode=draw(st.sampled_from(["zeros", "border"])),
                align_corners=draw(st.booleans()))


def _layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


def _ambiguous(case, p64):
    """(N, Ho, Wo) masks: sample points within rounding of a pixel boundary (gradient
    kinks, nearest ties) or of the projective horizon; and of the horizon alone."""
    tf = ts.get_transform(case["family"])
    n, _, h, w = case["x_shape"]
    ho, wo = case["out_size"]
    grid = tf.grid(p64, (n, 1, ho, wo), align_corners=case["align_corners"])
    size = torch.tensor([w, h], dtype=torch.float64)
    if case["align_corners"]:
        pix = (grid + 1) / 2 * (size - 1)
    else:
        pix = ((grid + 1) * size - 1) / 2
    rel = {torch.float64: 1e-9}.get(case["dtype"], 1e-4)
    tol = rel * pix.abs().clamp_min(1.0)
    frac = pix - pix.floor()
    if case["mode"] == "nearest":
        gap = (frac - 0.5).abs()  # a tie between two pixels
    else:
        gap = torch.minimum(frac, 1 - frac)  # a pixel boundary: a kink of the gradient
    kink = (gap < tol).any(-1)
    horizon = torch.zeros_like(kink)
    if case["family"] == "projective":
        m = tf.matrix(p64)
        ys, xs = torch.meshgrid(ts.grids._coords(ho, case["align_corners"], torch.float64,
                                                 "cpu"),
                                ts.grids._coords(wo, case["align_corners"], torch.float64,
                                                 "cpu"), indexing="ij")
        wz = m[:, 2, 0, None, None] * xs + m[:, 2, 1, None, None] * ys + m[:, 2, 2, None, None]
        scale = m[:, 2].abs().sum(-1)[:, None, None]
        horizon = (wz - 16 * torch.finfo(torch.float32).eps * scale).abs() < 1e-3 * scale
        horizon |= pix.abs().amax(-1) > FAR * 0.9  # the clamp to FAR
    return kink | horizon, horizon


def _check(backend, case):
    if case["parallel"]:
        from torchstn.ops.numba import backend as numba_backend

        serial_below = numba_backend.SERIAL_BELOW
        numba_backend.SERIAL_BELOW = 0
        try:
            return _compare(backend, case)
        finally:
            numba_backend.SERIAL_BELOW = serial_below
    return _compare(backend, case)


def _compare(backend, case):
    dev = _device(backend)
    dtype = case["dtype"]
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.rand(*case["x_shape"], generator=gen, dtype=torch.float64).to(dtype)
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    p = case["params"].to(work)
    p64 = p.double()
    ambiguous, horizon = _ambiguous(case, p64)
    ho, wo = case["out_size"]
    g = torch.randn(x.shape[0], x.shape[1], ho, wo, generator=gen, dtype=torch.float64)
    g = (g * (~ambiguous)[:, None]).to(dtype).double()  # what the backend will get
    kw = dict(out_size=case["out_size"], mode=case["mode"], padding_mode=case["padding_mode"],
              align_corners=case["align_corners"])
    # The reference: backend="torch" in float64, on the same (rounded) values.
    x64 = x.double().requires_grad_(True)
    p64 = p64.clone().requires_grad_(True)
    ref = ts.warp(x64, p64, case["family"], backend="torch", **kw)
    rgx, rgp = torch.autograd.grad(ref, (x64, p64), g)
    # The backend under test.
    xi = _layout(x.to(dev), case["layout"]).detach().requires_grad_(case["grads"][0])
    pi = p.to(dev).requires_grad_(case["grads"][1])
    out = ts.warp(xi, pi, case["family"], backend=backend, **kw)
    assert out.dtype == dtype and out.shape == ref.shape
    compared = ~horizon[:, None].expand_as(ref)
    if case["mode"] == "nearest":
        compared &= ~ambiguous[:, None].expand_as(ref)
    if dtype == torch.float64:
        tol_out, tol_gx, tol_gp = 1e-10, 1e-8, 1e-8
    elif dtype == torch.float32:
        tol_out, tol_gx, tol_gp = 2e-5, 1e-4, 1e-3
    else:
        eps = torch.finfo(dtype).eps
        tol_out, tol_gx, tol_gp = 4 * eps, 8 * eps, 2e-3
    got = out.detach().cpu().double()
    assert torch.isfinite(got).all()
    diff = (got - ref.detach())[compared].abs()
    assert diff.numel() == 0 or diff.max() <= tol_out, f"output: {float(diff.max()):.3g}"
    wanted = [t for t, need in zip((xi, pi), case["grads"]) if need]
    if not wanted:
        return
    grads = torch.autograd.grad(out, wanted, g.to(dev, dtype))
    expected = [(name, r, t) for name, r, t, need in zip(
        ("grad input", "grad params"), (rgx, rgp), (tol_gx, tol_gp), case["grads"]) if need]
    for got_g, (name, ref_g, tol) in zip(grads, expected):
        scale = ref_g.abs().max().clamp_min(1.0)
        err = (got_g.cpu().double() - ref_g).abs().max()
        assert err <= tol * scale, f"{name}: {float(err):.3g} > {tol} * {float(scale):.3g}"


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 database=None)
# The bounded profile of the default run: fixed examples (derandomised), under a minute
# for the three backends together.
# The default run's budget (fixed examples, derandomized); `-m slow` draws 20x as many.
_DEFAULT_EXAMPLES = {"torch": 150, "numba": 150, "triton": 60}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_against_the_float64_reference(backend):
    @settings(max_examples=_DEFAULT_EXAMPLES[backend], derandomize=True, **_SETTINGS)
    @given(warp_cases(backend))
    def check(case):
        _check(backend, case)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_against_the_float64_reference_long(backend):
    @settings(max_examples=20 * _DEFAULT_EXAMPLES[backend], **_SETTINGS)
    @given(warp_cases(backend))
    def check(case):
        _check(backend, case)

    check()
