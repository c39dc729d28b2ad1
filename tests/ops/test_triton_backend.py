"""The Triton kernels (backend="triton") against the reference path (backend="torch").

On machines without a GPU they run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), on small shapes.
"""

import re

import pytest
import torch
from helpers import assert_fused_refusals, fused_and_reference, smooth_image

import torchstn as ts
from torchstn import antialias
from torchstn.ops.triton import launch as triton_launch

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MATRIX_FAMILIES = ["translation", "attention", "rotation", "similarity", "affine", "projective"]


def _params(family, n, generator, spread=0.3):
    tf = ts.get_transform(family)
    noise = spread * torch.randn(n, tf.num_params, generator=generator)
    if family == "projective":
        noise[:, 6:] *= 0.3
    return (tf.identity() + noise).to(DEVICE)


def _both(x, p, family, g=None, **kw):
    """Output and gradients (input, params) of the Triton and the reference path."""
    out_size = kw.get("out_size") or x.shape[2:]
    if g is None:
        g = torch.randn(x.shape[0], x.shape[1], *out_size,
                        generator=torch.Generator().manual_seed(5)).to(DEVICE, x.dtype)
    return fused_and_reference("triton", x, p, family, g, **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 10, 12, generator=gen).to(DEVICE, dtype)
    p = _params("affine", 2, gen)
    (out, gx, gp), (ref, rgx, rgp) = _both(x, p, "affine", out_size=(8, 9))
    assert out.dtype == dtype and gx.dtype == dtype and gp.dtype == torch.float32
    # The reference computes in float32 too and rounds once: they agree to a rounding.
    eps = torch.finfo(dtype).eps
    assert (out.float() - ref.float()).abs().max() <= 2 * eps
    assert (gx.float() - rgx.float()).abs().max() <= 4 * eps * rgx.float().abs().max()
    assert (gp - rgp).abs().max() <= 1e-3 * rgp.abs().max()


def test_projective_horizon_and_far_points():
    x = torch.rand(3, 2, 10, 12).to(DEVICE)
    eye = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0])
    p = eye.repeat(3, 1)
    p[0, 6] = 2.0  # the horizon x = -1/2 crosses the image
    p[1, 7] = -1.0  # w = 1 - y
    p[2, :6] = torch.tensor([1e3, 0, 5e3, 0, 1e3, 0])  # points far outside
    p = p.to(DEVICE)
    for padding in ["zeros", "border"]:
        (out, gx, gp), (ref, rgx, rgp) = _both(x, p, "projective", padding_mode=padding)
        assert torch.isfinite(out).all() and torch.isfinite(gp).all()
        assert (out - ref).abs().max() <= 1e-5
        assert (gx - rgx).abs().max() <= 1e-5
        assert (gp - rgp).abs().max() <= 1e-4 * rgp.abs().max().clamp_min(1.0)


def test_finite_differences_float32():
    """Directional derivatives against central differences, in float32.

    Parameters: a smooth image (bilinear sampling is only piecewise smooth: on noise the
    kinks between pixels dominate a difference quotient), step 1e-3, agreement within 3%
    of the derivative's size plus 0.05 (float32 rounding of the loss over the step). Input: the warp is linear in the input, so a unit step is
    exact up to float32 rounding (1e-5 relative).
    """
    gen = torch.Generator().manual_seed(2)
    x = smooth_image(2, 2, 24, 24, dtype=torch.float32).to(DEVICE)
    g = torch.randn(2, 2, 9, 9, generator=gen).to(DEVICE)
    for family in ["similarity", "affine", "projective"]:
        p = _params(family, 2, gen, spread=0.1)
        d = torch.randn(p.shape, generator=gen).to(DEVICE)
        pi = p.clone().requires_grad_(True)
        xi = x.clone().requires_grad_(True)
        out = ts.warp(xi, pi, family, backend="triton", out_size=(9, 9))
        gx, gp = torch.autograd.grad(out, (xi, pi), g)

        def loss(q, xx=x, family=family):
            return (ts.warp(xx, q, family, backend="triton", out_size=(9, 9)) * g).sum()

        eps = 1e-3
        numeric = (loss(p + eps * d) - loss(p - eps * d)) / (2 * eps)
        analytic = (gp * d).sum()
        assert abs(numeric - analytic) <= 0.03 * abs(analytic) + 0.05, (family, numeric, analytic)
        dx = torch.randn(x.shape, generator=gen).to(DEVICE)
        numeric_x = loss(p, x + dx) - loss(p, x)
        assert abs(numeric_x - (gx * dx).sum()) <= 1e-5 * (g.abs().sum() * dx.abs().max()), family


def test_bit_identical_and_allowed_under_deterministic_algorithms():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 5, 16, 16, generator=gen).to(DEVICE)
    p = _params("projective", 3, gen)
    g = torch.randn(3, 5, 20, 14, generator=gen).to(DEVICE)

    def run():
        xi = x.clone().requires_grad_(True)
        pi = p.clone().requires_grad_(True)
        out = ts.warp(xi, pi, "projective", backend="triton", out_size=(20, 14))
        return (out, *torch.autograd.grad(out, (xi, pi), g))

    first = run()
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        second = run()
    finally:
        torch.use_deterministic_algorithms(old)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_channels_last_and_input_gradient_skipped():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 4, 9, 9, generator=gen).to(DEVICE)
    p = _params("affine", 2, gen).requires_grad_(True)
    x_cl = x.to(memory_format=torch.channels_last)
    a = ts.warp(x, p, "affine", backend="triton")
    b = ts.warp(x_cl, p, "affine", backend="triton")
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b)
    (gp,) = torch.autograd.grad(b.sum(), p)  # input needs no gradient
    (rgp,) = torch.autograd.grad(ts.warp(x, p, "affine", backend="torch").sum(), p)
    assert (gp - rgp).abs().max() <= 1e-4 * rgp.abs().max()


def test_fixed_point_input_gradient_precision():
    """Large and tiny output gradients in one image keep float32-level accuracy."""
    x = torch.rand(1, 1, 16, 16).to(DEVICE)
    p = torch.tensor([[0.9, 0.1, 0.05, -0.1, 0.8, 0.0]]).to(DEVICE)
    g = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    g[0, 0, :8] *= 1e4
    g[0, 0, 8:] *= 1e-3
    (_, gx, _), (_, rgx, _) = _both(x, p, "affine", g=g.to(DEVICE))
    assert (gx - rgx).abs().max() <= 1e-6 * rgx.abs().max()
    # Where only the small gradients arrive, the result is still accurate.
    small = rgx.abs() < 1.0
    assert (gx - rgx)[small].abs().max() <= 1e-3 * rgx[small].abs().max() + 1e-9


# The interpreter (NumPy) warns when the kernel converts the infinite contribution.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_output_gradient_gives_nan_input_gradient():
    x = torch.rand(2, 1, 5, 5).to(DEVICE).requires_grad_(True)
    p = torch.zeros(2, 2).to(DEVICE)
    out = ts.warp(x, p, "translation", backend="triton")
    g = torch.ones_like(out)
    g[1, 0, 2, 2] = float("inf")
    (gx,) = torch.autograd.grad(out, x, g)
    assert torch.isfinite(gx[0]).all() and torch.isnan(gx[1]).all()


def test_errors_and_fallbacks(monkeypatch):
    x = torch.rand(1, 1, 4, 4).to(DEVICE)
    p = torch.zeros(1, 6).to(DEVICE)
    assert_fused_refusals("triton", x, p)
    with pytest.raises(ValueError, match="it supports float32, float16 and bfloat16 input, got torch.float64"):
        ts.warp(x.double(), p.double(), "affine", backend="triton")
    assert ts.list_backends() == ["numba", "triton", "torch"]
    # auto never picks Triton, not even on CUDA, until gpu-check.sh has shown it faster
    assert torch.equal(ts.warp(x.half(), p, "affine"),
                       ts.warp(x.half(), p, "affine", backend="torch"))
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match=re.escape("it runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), got a tensor on cpu")):
            ts.warp(x, p, "affine", backend="triton")
    monkeypatch.setattr(ts.warping.BACKENDS.get("triton"), "_available", False)
    with pytest.raises(ValueError, match=re.escape("triton is not installed (pip install triton)")):
        ts.warp(x, p, "affine", backend="triton")


def test_second_derivative_is_refused_clearly():
    x = torch.rand(1, 1, 4, 4).to(DEVICE)
    p = torch.zeros(1, 2).to(DEVICE).requires_grad_(True)
    out = ts.warp(x, p, "translation", backend="triton")
    (gp,) = torch.autograd.grad(out.sum(), p, create_graph=True)
    with pytest.raises(RuntimeError, match="backend 'triton' does not support double backward"):
        torch.autograd.grad(gp.sum(), p)


def test_fixed_point_scale_bounds_every_sum():
    g = torch.tensor([[[[3.0, -1.0]]], [[[0.0, 0.0]]], [[[1e30, 1.0]]]])
    scale, finite = triton_launch._fixed_point_scale(g)
    assert finite.all()
    assert scale[0] == 2.0 ** 60  # sum 4 -> 2^62 / 4
    assert scale[1] == 2.0 ** 100  # capped
    assert (g[2].abs().sum() * scale[2]) <= 2.0 ** 62


_COMPILE_SCRIPT = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from torchstn.ops.triton import kernels as k

dtype = sys.argv[1]
try:
    target = GPUTarget("cuda", 90, 32)  # an H100
except Exception as e:
    print("NO-CUDA-BACKEND", e)
    sys.exit(0)

def compile_(fn, signature, constexprs):
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                          target=target)

# As a real launch: 32-bit sizes and strides, and Triton's specialisation of arguments
# equal to 1 to constants (here H == 1 and the width strides).
strides = {name: "i32" for name in ["sxn", "sxc", "sxh"]}
strides["sxw"] = "constexpr"
sizes = {name: "i32" for name in ["C", "W", "Ho", "Wo", "BLOCKS"]}
sizes["H"] = "constexpr"
ones = {"H": 1, "sxw": 1}
flags = {"NEAREST": False, "BORDER": True, "ALIGN": False, "PROJ": True, "BLOCK": 256}
fwd = compile_(k.warp_fwd_kernel, {
    "x_ptr": f"*{dtype}", "m_ptr": "*fp32", "out_ptr": f"*{dtype}", **sizes, **strides,
    **{name: "i32" for name in ["son", "soc", "soh"]}, "sow": "constexpr", "eps16": "fp32",
    **{name: "constexpr" for name in flags}}, {**flags, **ones, "sow": 1})
assert ".entry warp_fwd_kernel" in fwd.asm["ptx"]
bflags = {"NEED_X": True, "NEED_M": True, **flags}
bwd = compile_(k.warp_bwd_kernel, {
    "x_ptr": f"*{dtype}", "m_ptr": "*fp32", "go_ptr": f"*{dtype}", "gx_ptr": "*i64",
    "scale_ptr": "*fp32", "part_ptr": "*fp32", **sizes, **strides,
    **{name: "i32" for name in ["sgn", "sgc", "sgh"]}, "sgw": "constexpr", "eps16": "fp32",
    **{name: "constexpr" for name in bflags}}, {**bflags, **ones, "sgw": 1})
aflags = {k: v for k, v in flags.items() if k != "NEAREST"}
afwd = compile_(k.warp_aa_fwd_kernel, {
    "x_ptr": f"*{dtype}", "m_ptr": "*fp32", "out_ptr": f"*{dtype}", **sizes, **strides,
    **{name: "i32" for name in ["son", "soc", "soh"]}, "sow": "constexpr", "eps16": "fp32",
    **{name: "constexpr" for name in aflags}}, {**aflags, **ones, "sow": 1})
assert ".entry warp_aa_fwd_kernel" in afwd.asm["ptx"]
abflags = {"NEED_X": True, "NEED_M": True, **aflags}
abwd = compile_(k.warp_aa_bwd_kernel, {
    "x_ptr": f"*{dtype}", "m_ptr": "*fp32", "go_ptr": f"*{dtype}", "gx_ptr": "*i64",
    "scale_ptr": "*fp32", "part_ptr": "*fp32", **sizes, **strides,
    **{name: "i32" for name in ["sgn", "sgc", "sgh"]}, "sgw": "constexpr", "eps16": "fp32",
    **{name: "constexpr" for name in abflags}}, {**abflags, **ones, "sgw": 1})
atomics = [line.strip() for b in (bwd, abwd) for line in b.asm["ptx"].splitlines()
           if any(word.startswith(("atom.", "red.")) for word in line.split())]
print("ATOMICS", "|".join(atomics))
print("CUBIN", min(len(bwd.asm["cubin"]), len(abwd.asm["cubin"])))
"""


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_the_gpu(dtype):
    """The interpreter does not type-check like the compiler: compile for an H100 too.

    Runs without TRITON_INTERPRET in a subprocess (PTX and a cubin need no GPU), and
    checks the determinism method in the generated code: the input gradient is
    accumulated with 64-bit INTEGER atomics, and no floating-point atomics are used.
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    result = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, dtype], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if "NO-CUDA-BACKEND" in result.stdout:
        pytest.skip("this triton build has no CUDA backend")
    atomics = result.stdout.split("ATOMICS ", 1)[1].splitlines()[0].split("|")
    assert atomics and all(".u64" in a or ".s64" in a for a in atomics), atomics
    assert not any(".f32" in a or ".f16" in a or ".bf16" in a for a in atomics), atomics
    assert int(result.stdout.split("CUBIN ", 1)[1].split()[0]) > 0


# --- antialias=True: the anti-aliased kernels (torchstn/ops/triton/antialias.py) ---------
# Small cases: the interpreter takes about 0.1 s per supersampling point and channel.

_AA_PARAMS = {  # generic values: no sample on a pixel boundary, where bilinear's
    # coordinate gradient jumps and float32 rounding would pick either side
    "affine": [[1.31, 0.23, 0.051, -0.12, 1.13, 0.013], [0.93, -0.31, 0.017, 0.22, 1.21, 0.11]],
    "projective": [[1.3, 0.2, 0.05, -0.1, 1.1, 0.0, 0.2, -0.1],
                   [0.9, -0.3, 0.0, 0.2, 1.2, 0.1, -0.1, 0.1]],
}


@pytest.mark.parametrize(("family", "padding_mode", "align_corners"),
                         [("affine", "zeros", False), ("affine", "border", True),
                          ("projective", "zeros", True), ("projective", "border", False)])
def test_antialias_matches_the_reference(family, padding_mode, align_corners):
    p = torch.tensor(_AA_PARAMS[family], device=DEVICE)
    x = torch.rand(2, 2, 9, 8, device=DEVICE)  # up to 3 x 3 points per output pixel
    g = torch.randn(2, 2, 4, 3, device=DEVICE)
    kw = dict(out_size=(4, 3), padding_mode=padding_mode, align_corners=align_corners,
              antialias=True)
    (out, gx, gp), (ref, rgx, rgp) = fused_and_reference("triton", x, p, family, g, **kw)
    counts = antialias.sample_counts(antialias.footprint(
        ts.get_transform(family).grid(p, (2, 2, 4, 3), align_corners=align_corners),
        (9, 8), align_corners)[0])
    assert counts.max() > 1  # the footprint is averaged
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(gx, rgx, rtol=0, atol=1e-6)
    torch.testing.assert_close(gp, rgp, rtol=1e-4, atol=1e-5)
    # Deterministic: the same bits again.
    (out2, gx2, gp2), _ = fused_and_reference("triton", x, p, family, g, **kw)
    assert torch.equal(out, out2) and torch.equal(gx, gx2) and torch.equal(gp, gp2)


def test_antialias_refuses_nearest_and_the_nonfinite_rule_holds():
    x = torch.rand(2, 1, 8, 8, device=DEVICE)
    p = torch.tensor(_AA_PARAMS["affine"], device=DEVICE)
    with pytest.raises(ValueError, match="backend 'triton' cannot run this warp: antialias "
                                         "with mode 'nearest' runs on backend 'torch'"):
        ts.warp(x, p, "affine", antialias=True, mode="nearest", backend="triton")
    p[1, 0] = float("inf")
    out = ts.warp(x, p, "affine", out_size=(3, 3), antialias=True, backend="triton")
    assert out[1].isnan().all() and out[0].isfinite().all()
