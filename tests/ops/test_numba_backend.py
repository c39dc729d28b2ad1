"""The fused CPU kernels (backend="numba") against the reference path (backend="torch")."""

import itertools
import os
import re

import numpy as np
import pytest
import torch
from helpers import assert_fused_refusals, fused_and_reference

import torchstn as ts
from torchstn import warping
from torchstn.ops.numba import backend as numba_backend
from torchstn.ops.numba import coords, lanes, memory
from torchstn.ops.numba import kernels as numba_kernels

MATRIX_FAMILIES = ["translation", "attention", "rotation", "similarity", "affine", "projective"]
PADDINGS = ["zeros", "border"]


def _params(family, n, dtype, generator, spread=0.3):
    tf = ts.get_transform(family)
    noise = spread * torch.randn(n, tf.num_params, generator=generator, dtype=torch.float64)
    if family == "projective":
        noise[:, 6:] *= 0.3  # keep the horizon off the image for the generic cases
    return (tf.identity(dtype=torch.float64) + noise).to(dtype)


def _both(x, p, family, **kw):
    """Output and gradients (input, params) of the fused and the reference path."""
    g = torch.randn(x.shape[0], x.shape[1], *(kw.get("out_size") or x.shape[2:]),
                    generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(x.dtype)
    return fused_and_reference("numba", x, p, family, g, **kw)


def _warp_grads(backend, x, p, family, g):
    """One path's output and gradients (input, params) for ``g``."""
    xi, pi = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
    out = ts.warp(xi, pi, family, backend=backend)
    return (out.detach(), *torch.autograd.grad(out, (xi, pi), g))


@pytest.fixture(params=["serial", "parallel"])
def kernels(request, monkeypatch):
    """Run small warps through the serial kernels (the default) or the parallel ones."""
    if request.param == "parallel":
        monkeypatch.setattr(numba_backend, "SERIAL_BELOW", 0)
    return request.param


@pytest.mark.parametrize("padding", PADDINGS)
def test_points_far_outside_the_image(padding, kernels):
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    # Translated by 1e3 image widths; scaled down 1e5 times (every point at the centre
    # pixel's neighbourhood... of a far-away point); a huge attention scale.
    cases = {
        "translation": torch.tensor([[1e3, -2e3], [-5e4, 3.0]], dtype=torch.float64),
        "attention": torch.tensor([[11.0, 0.0, 0.0], [-10.0, 1e4, 1e4]], dtype=torch.float64),
        "affine": torch.tensor([[1e6, 0, 0, 0, 1e6, 0], [1, 2, 3e5, 4, 5, 6]],
                               dtype=torch.float64),
    }
    for family, p in cases.items():
        (out, gx, gp), (ref, rgx, rgp) = _both(x, p, family, padding_mode=padding)
        assert torch.equal(out, ref) or (out - ref).abs().max() < 1e-12, family
        assert (gx - rgx).abs().max() < 1e-12, family
        assert (gp - rgp).abs().max() <= 1e-10 * rgp.abs().max().clamp_min(1.0), family
        if padding == "zeros":
            assert out[0].abs().max() == 0, family  # the first image lies entirely outside


@pytest.mark.parametrize("align", [False, True])
def test_projective_points_at_and_behind_infinity(align, kernels):
    x = torch.rand(3, 2, 10, 12, dtype=torch.float64)
    eye = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64)
    p = eye.repeat(3, 1)
    p[0, 6] = 2.0  # w = 2x + 1: the horizon x = -1/2 crosses the image, left of it w < 0
    p[1, 7] = -1.0  # w = 1 - y: the horizon is the bottom edge at y = 1 (align_corners)
    p[2, 6:] = torch.tensor([1.0, 1.0])  # w = 1 + x + y: w = 0 on the anti-diagonal corner
    for padding in PADDINGS:
        kw = dict(padding_mode=padding, align_corners=align, out_size=(11, 13))
        (out, gx, gp), (ref, rgx, rgp) = _both(x, p, "projective", **kw)
        assert torch.isfinite(out).all() and torch.isfinite(gp).all()
        assert (out - ref).abs().max() < 1e-10
        assert (gx - rgx).abs().max() < 1e-10
        assert (gp - rgp).abs().max() < 1e-8 * rgp.abs().max().clamp_min(1.0)


def test_float32_large_image_and_output_size():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 40, 50, generator=gen)
    p = _params("affine", 2, torch.float32, gen, spread=0.2)
    for out_size in [(80, 30), (1, 1), (3, 97)]:
        (out, gx, gp), (ref, rgx, rgp) = _both(x, p, "affine", out_size=out_size)
        assert (out - ref).abs().max() <= 1e-5
        assert (gx - rgx).abs().max() <= 1e-4
        assert (gp - rgp).abs().max() <= 1e-4 * rgp.abs().max().clamp_min(1.0)


def test_subclass_with_its_own_matrix_is_not_taken_as_matrix_entries():
    """A subclass of Affine whose parameters are offsets from the identity overrides
    _matrix: the fused path must build its matrix, not read the parameters as one."""
    from torchstn.transforms import Affine, _homogeneous

    eye = torch.tensor([1.0, 0, 0, 0, 1, 0])

    class DeltaAffine(Affine):
        name = "delta_affine"

        def identity(self, *, dtype=torch.float32, device=None):
            return torch.zeros(6, dtype=dtype, device=device)

        def _matrix(self, p):
            return _homogeneous((p + eye.to(p.dtype)).view(-1, 2, 3))

    tf = DeltaAffine()
    assert tf._param_entries() is None and Affine()._param_entries() == 6
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 8, 9, generator=gen, dtype=torch.float64)
    p = 0.1 * torch.randn(2, 6, generator=gen, dtype=torch.float64)
    (out, gx, gp), (ref, rgx, rgp) = _both(x, p, tf)
    assert (out - ref).abs().max() <= 1e-10
    assert (gp - rgp).abs().max() <= 1e-10


def test_chunks_are_whole_and_fit_the_prefetch_blocks():
    """Output rows go in chunks that divide the height (every scratch loop runs over whole
    arrays) and whole chunks fill each prefetch block."""
    for ho, wo, c in [(28, 28, 1), (30, 20, 40), (97, 5, 1), (56, 56, 64), (3, 97, 3),
                      (1, 1, 1), (224, 224, 3), (80, 30, 16)]:
        rows, block = coords._chunking(ho, wo, c)
        assert ho % rows == 0 and block % rows == 0, (ho, wo, c)
        assert rows == 1 or rows * wo <= coords._CHUNK
        # the largest such divisor
        assert not any(ho % d == 0 and d * wo <= coords._CHUNK
                       and d * wo * c <= coords._BLOCK_VALUES
                       for d in range(rows + 1, ho + 1)), (ho, wo, c)
    assert coords._chunking(28, 28, 1)[0] == 7
    assert coords._chunking(97, 5, 1)[0] == 1  # a prime height: rows one by one


# float32 by default: the float64 tiled kernels compile only for this test and the tiled
# gradchecks, all under -m slow (about 50 s of a fresh clone's test run).
@pytest.mark.parametrize("dtype", [torch.float32,
                                   pytest.param(torch.float64, marks=pytest.mark.slow)])
def test_many_chunks_and_blocks_per_image_match_reference(dtype, monkeypatch):
    """40 channels of 30 x 20: chunks of 10 rows and two prefetch blocks per image in the
    forward pass, channel groups of the tile's lanes in the backward pass (parallel
    kernels); against the reference path in float64 on the same values."""
    monkeypatch.setattr(numba_backend, "SERIAL_BELOW", 0)
    assert coords._chunking(30, 20, 40) == (10, 20)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 40, 30, 20, generator=gen, dtype=torch.float64).to(dtype)
    tol = 1e-10 if dtype == torch.float64 else 2e-6  # float32: 1e-7 to 6e-7 measured
    g = torch.randn(3, 40, 30, 20, generator=gen, dtype=torch.float64)
    for family in ("affine", "projective"):
        p = _params(family, 3, dtype, gen, spread=0.2)
        out, gx, gp = _warp_grads("numba", x, p, family, g.to(dtype))
        ref, rgx, rgp = _warp_grads("torch", x.double(), p.double(), family, g)
        assert (out.double() - ref).abs().max() <= tol, family
        assert (gx.double() - rgx).abs().max() <= tol, family
        assert (gp.double() - rgp).abs().max() <= tol * rgp.abs().max().clamp_min(1.0), family


@pytest.mark.parametrize("family", ["affine", "projective"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
def test_gradcheck(family, padding, align, kernels):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    p = _params(family, 2, torch.float64, gen, spread=0.15).requires_grad_(True)

    def f(x, p):
        return ts.warp(x, p, family, backend="numba", padding_mode=padding,
                       align_corners=align, out_size=(4, 7))

    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-5)


def _run(x, p, family="affine", threads=None, **kw):
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        xi = x.clone().requires_grad_(True)
        pi = p.clone().requires_grad_(True)
        out = ts.warp(xi, pi, family, backend="numba", **kw)
        gx, gp = torch.autograd.grad(out, (xi, pi), torch.ones_like(out) * 0.37)
        return out, gx, gp
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("family", ["affine", "projective"])
@pytest.mark.parametrize("channels", [40, 3])
def test_deterministic_across_runs_and_thread_counts(family, channels):
    gen = torch.Generator().manual_seed(3)
    assert 5 * 3 * 47 * 49 > numba_backend.SERIAL_BELOW  # the parallel kernels
    # 40 channels: three channel groups, summed in a fixed order, pixel by pixel; 3
    # channels: plane by plane.
    size = (17, 19) if channels == 40 else (47, 49)
    x = torch.rand(5, channels, *size, generator=gen)
    p = _params(family, 5, torch.float32, gen)
    first = _run(x, p, family, threads=1)
    for threads in (1, 2, 3):
        again = _run(x, p, family, threads=threads)
        for a, b in zip(first, again):
            assert torch.equal(a, b), threads


def test_input_gradient_skipped_when_not_needed(monkeypatch):
    calls = []

    def spy_on(real):
        def spy(*args):
            calls.append(args[5:7])  # need_x, need_m
            return real(*args)
        return spy

    for name in ("warp_backward", "warp_backward_serial"):
        monkeypatch.setattr(numba_kernels, name, spy_on(getattr(numba_kernels, name)))
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    p = _params("affine", 2, torch.float32, gen).requires_grad_(True)
    ts.warp(x, p, "affine", backend="numba").sum().backward()
    assert calls == [(False, True)]
    (gp_ref,) = torch.autograd.grad(ts.warp(x, p, "affine", backend="torch").sum(), p)
    assert (p.grad - gp_ref).abs().max() < 1e-4
    xg = x.clone().requires_grad_(True)
    ts.warp(xg, p.detach(), "affine", backend="numba").sum().backward()
    assert calls[-1] == (True, False)


def test_auto_uses_numba_on_cpu_and_falls_back_otherwise():
    x = torch.rand(1, 1, 4, 4)
    tf = ts.get_transform("affine")

    def chosen(**kw):
        opts = dict(mode="bilinear", padding_mode="zeros", align_corners=False)
        opts.update(kw)
        inp = opts.pop("input", x)
        family = ts.get_transform(opts.pop("family", "affine"))
        params = family.identity().repeat(1, 1).to(torch.float32)
        call = warping.WarpCall(inp, params, family, (4, 4), opts["mode"],
                                opts["padding_mode"], opts["align_corners"])
        return warping.select_backend("auto", call).name

    assert ts.list_backends()[0] == "numba"
    assert chosen() == "numba"
    assert chosen(mode="bicubic") == "torch"
    assert chosen(padding_mode="reflection") == "torch"
    assert chosen(family="tps") == "torch"
    assert chosen(input=x.half()) == "torch"
    assert tf.is_matrix
    # Fallback results are the reference path's, exactly.
    p = torch.tensor([[0.1, 0.2, 0.0, -0.1, 0.9, 0.05]])
    for kw in [dict(mode="bicubic"), dict(padding_mode="reflection")]:
        assert torch.equal(ts.warp(x, p, "affine", **kw),
                           ts.warp(x, p, "affine", backend="torch", **kw))


def test_forced_numba_errors_say_why():
    x = torch.rand(1, 1, 4, 4)
    p = torch.zeros(1, 6)
    assert_fused_refusals("numba", x, p)
    with pytest.raises(ValueError, match="it supports float32 and float64 input, got torch.float16"):
        ts.warp(x.half(), p, "affine", backend="numba")
    with pytest.raises(ValueError, match="got 'affine3d'"):
        ts.warp(torch.rand(1, 1, 2, 3, 3), torch.zeros(1, 12), "affine3d", backend="numba")


def test_without_numba_auto_falls_back_and_forcing_fails(monkeypatch):
    backend = warping.BACKENDS.get("numba")
    monkeypatch.setattr(backend, "_available", False)
    x = torch.rand(1, 1, 4, 4)
    p = torch.tensor([[0.1, 0.2]])
    assert torch.equal(ts.warp(x, p, "translation"), ts.warp(x, p, "translation", backend="torch"))
    with pytest.raises(ValueError, match=re.escape("numba is not installed (pip install numba)")):
        ts.warp(x, p, "translation", backend="numba")


def test_second_derivative_is_refused_clearly():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    p = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    out = ts.warp(x, p, "translation", backend="numba")
    # The first derivative may be taken with create_graph (AOTAutograd does); the
    # second one is refused.
    (gp,) = torch.autograd.grad(out.sum(), p, create_graph=True)
    with pytest.raises(RuntimeError, match=re.escape("backend 'numba' does not support double backward (create_graph=True); use backend='torch'")):
        torch.autograd.grad(gp.sum(), p)
    out = ts.warp(x, p, "translation", backend="torch")
    (gp,) = torch.autograd.grad(out.sum(), p, create_graph=True)  # the reference path can
    assert gp.requires_grad


def test_compile_times_are_recorded():
    ts.warp(torch.rand(1, 1, 3, 3), torch.zeros(1, 2), "translation", backend="numba")
    assert any(k.startswith("forward[") for k in numba_backend.compile_seconds)


def test_compile_kernels_compiles_every_kernel_of_a_dtype():
    from torchstn.ops.numba import compile_kernels

    with pytest.raises(ValueError, match="compile_kernels: dtype must be torch.float32 or "
                                         "torch.float64, got torch.float16"):
        compile_kernels(torch.float16)
    compile_kernels(torch.float32)
    names = {k for k in numba_backend.compile_seconds if "float32" in k}
    kernels = {f"{kind}[torch.float32]{copy}" for copy in ("", "[serial]")
               for kind in ("forward", "backward", "forward-tiles", "backward-tiles",
                            "antialias-forward", "antialias-backward")}
    assert names == kernels
    assert compile_kernels(torch.float32) == {}  # nothing left to compile
    # ... and it compiled them for the arrays the operators pass (no other signature).
    before = {k: len(f.signatures) for k, f in _numba_dispatchers().items()}
    ts.warp(torch.rand(2, 16, 9, 9), torch.zeros(2, 6), "affine", backend="numba")
    ts.warp(torch.rand(2, 1, 9, 9), torch.zeros(2, 6), "affine", out_size=(4, 4),
            antialias=True, backend="numba")
    assert {k: len(f.signatures) for k, f in _numba_dispatchers().items()} == before
    assert not [sig for f in _numba_dispatchers().values() for sig in f.signatures
                if any(getattr(t, "readonly", False) for t in sig)]


def _numba_dispatchers():
    kernels = numba_backend._load()
    return {name: getattr(kernels, name) for name in kernels.__all__
            if name.startswith("warp_")}


def test_parallel_kernels_run_in_parallel_after_a_cache_reload():
    """The serial and the parallel kernels must not share a Numba cache entry.

    They once did: a fresh process then loaded the serial code for the parallel kernel
    and never started a thread pool. Run both here (filling the cache), then check in a
    new process that a large warp starts Numba's thread pool.
    """
    import subprocess
    import sys

    ts.warp(torch.rand(1, 1, 3, 3), torch.zeros(1, 2), "translation", backend="numba")
    ts.warp(torch.rand(64, 1, 32, 32), torch.zeros(64, 2), "translation", backend="numba")
    code = (
        "import torch, numba, torchstn as ts\n"
        "ts.warp(torch.rand(64, 1, 32, 32), torch.zeros(64, 2), 'translation', "
        "backend='numba')\n"
        "print(numba.threading_layer())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("omp", "tbb", "workqueue")


def _warp_in_worker(x, p):
    torch.set_num_threads(1)  # as a DataLoader worker does
    return ts.warp(x, p, "translation", backend="numba")


def test_forked_worker_can_warp_after_the_parent_did():
    """Numba's OpenMP pool does not survive fork: a forked child must use serial kernels.

    Without that, the child aborts ("fork() called from a process already using GNU
    OpenMP") and the pool below times out.
    """
    import multiprocessing

    x = torch.rand(64, 1, 32, 32)
    p = torch.zeros(64, 2) + 0.1
    expected = ts.warp(x, p, "translation", backend="numba")  # parallel, in the parent
    assert x.numel() > numba_backend.SERIAL_BELOW
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_warp_in_worker, (x, p)).get(timeout=120)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("sizes", [(6, 6, 3, 3), (28, 28, 14, 14), (9, 12, 5, 4), (8, 8, 16, 16),
                                   (7, 11, 21, 22)])
@pytest.mark.parametrize("padding", PADDINGS)
def test_nearest_resize_ties_break_as_the_reference(sizes, padding):
    """Resizing with the identity puts samples exactly on half-pixel ties; float32 input
    then reads the same pixels as the reference path (coordinates rounded as it rounds)."""
    h, w, ho, wo = sizes
    x = torch.rand(2, 3, h, w)
    p = ts.get_transform("affine").identity().repeat(2, 1)
    kw = dict(mode="nearest", padding_mode=padding, out_size=(ho, wo))
    assert torch.equal(ts.warp(x, p, "affine", backend="numba", **kw),
                       ts.warp(x, p, "affine", backend="torch", **kw))


def _footprint_case(m, out_h, out_w, h, w, align, rows):
    """Every input pixel that bilinear taps of output rows ``rows`` read, against the box."""
    xo = coords._base_coords(out_w, align, False)
    yo = coords._base_coords(out_h, align, False)
    box = coords._footprint(m, xo[0], xo[-1], yo[rows[0]], yo[rows[-1]], h, w, align,
                                    bool(m[2, 0] or m[2, 1] or m[2, 2] != 1), 16 * 2.2e-16)
    gy, gx = np.meshgrid(yo[rows], xo, indexing="ij")
    pts = m @ np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    px, py = pts[0] / pts[2], pts[1] / pts[2]
    sx, sy = ((w - 1) / 2, (h - 1) / 2) if align else (w / 2, h / 2)
    ix = px * sx + (w - 1) / 2
    iy = py * sy + (h - 1) / 2
    x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
    read = []
    for dx, dy in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        tx, ty = x0 + dx, y0 + dy
        ok = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        read.append((tx[ok], ty[ok]))
    xs = np.concatenate([r[0] for r in read])
    ys = np.concatenate([r[1] for r in read])
    return box, xs, ys


@pytest.mark.parametrize("align", [False, True])
def test_prefetch_footprint_covers_every_tap(align):
    """The prefetch box of a block of output rows holds every pixel their taps read
    (else the prefetch misses lines; values never depend on it), and stays in the image."""
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(200):
        m = np.eye(3) + rng.normal(0, 0.4, (3, 3))
        if trial % 2 == 0:
            m[2] = [0.0, 0.0, 1.0]  # affine
        else:
            m[2, :2] *= 0.3
        h, w = rng.integers(3, 40, 2)
        out_h, out_w = rng.integers(2, 40, 2)
        r0 = int(rng.integers(0, out_h - 1))
        rows = np.arange(r0, int(rng.integers(r0 + 1, out_h + 1)))
        corners = m[2] @ np.array([[-1, -1, 1, 1], [-1, 1, -1, 1], [1, 1, 1, 1]])
        box, xs, ys = _footprint_case(m, out_h, out_w, h, w, align, rows)
        x_lo, x_hi, y_lo, y_hi = box
        assert 0 <= x_lo and x_hi <= w - 1 and 0 <= y_lo and y_hi <= h - 1, box
        if (corners <= 0).any():
            continue  # near or behind the horizon the box may be the whole image
        if xs.size:
            assert x_lo <= xs.min() and xs.max() <= x_hi, (trial, box)
            assert y_lo <= ys.min() and ys.max() <= y_hi, (trial, box)
            checked += 1
    assert checked > 100
    # Behind the horizon: the whole image.
    m = np.diag([1.0, 1.0, -1.0])
    assert coords._footprint(m, -1.0, 1.0, -1.0, 1.0, 5, 7, align, True,
                                     1e-15) == (0, 6, 0, 4)


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
                    reason="no transparent huge pages on this system")
def _vm_flags(address):
    """The VmFlags of the mapping that holds ``address``, from /proc/self/smaps."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    mapping = None
    for line in lines:
        first = line.split()[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first):
            lo, hi = (int(v, 16) for v in first.split("-"))
            mapping = lo <= address < hi
        elif line.startswith("VmFlags:") and mapping:
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_large_fresh_outputs_are_advised_huge_pages():
    assert memory.HUGE_PAGES_FROM == 4 << 20  # NumPy's threshold
    # 256 MiB: above glibc's largest mmap threshold (32 MiB) and far above the free space
    # it keeps at the top of its heap (up to its trim threshold, 64 MiB), so freshly
    # mapped whatever the tests before this one allocated (at 40 MiB a full run sometimes
    # got heap memory, already resident and so rightly left alone).
    t = memory._empty(64 << 20, dtype=torch.float32)
    start = -(-t.data_ptr() // (2 << 20)) * (2 << 20)
    assert "hg" in _vm_flags(start)  # MADV_HUGEPAGE took effect on the tensor's memory
    # Memory already in use is left as it is.
    used = torch.empty(64 << 20, dtype=torch.float32)  # fresh too, for the same reason
    used_start = -(-used.data_ptr() // (2 << 20)) * (2 << 20)
    assert not memory._resident(used_start)
    used.fill_(1.0)
    assert memory._resident(used_start)
    memory._advise_huge_pages(used)
    assert "hg" not in _vm_flags(used_start)
    small = memory._empty(1000, dtype=torch.float32)
    assert small.shape == (1000,)


def test_inf_grad_out_matches_reference_in_many_channel_groups():
    """An infinite output gradient gives an infinite (not NaN) matrix gradient, as on the
    reference path: the tap weights multiply each channel's differences before summing."""
    x = torch.rand(1, 17, 11, 13)  # a tile of 16 float32 lanes and one more channel
    p = torch.tensor([[1.0, 0, 0, 0, 1, 0]])
    go = torch.randn(1, 17, 9, 17, generator=torch.Generator().manual_seed(0))
    go[0, -1, -1, -1] = float("inf")
    grads = []
    for backend in ("numba", "torch"):
        pi = p.clone().requires_grad_(True)
        out = ts.warp(x, pi, "affine", backend=backend, out_size=(9, 17), align_corners=True)
        (gp,) = torch.autograd.grad(out, pi, go)
        grads.append(gp)
    assert torch.equal(torch.isnan(grads[0]), torch.isnan(grads[1])), grads
    assert torch.equal(torch.isinf(grads[0]), torch.isinf(grads[1])), grads


def test_torch_func_on_the_reference_path():
    x = torch.rand(2, 3, 8, 9)
    p = torch.tensor([[1.0, 0.1, 0, 0, 1, 0], [0.9, 0, 0.1, 0, 1, 0]])
    g = torch.func.grad(lambda q: ts.warp(x, q, "affine", backend="torch").sum())(p)
    pi = p.clone().requires_grad_(True)
    ts.warp(x, pi, "affine", backend="torch").sum().backward()
    assert torch.allclose(g, pi.grad)


# Tiled kernels: bilinear warps of a full vector of channels or more (16 float32, 8 float64).

def _lanes(dtype):
    return lanes.tile_lanes(torch.empty(0, dtype=dtype).element_size())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_block_transposes_strided_blocks(dtype):
    from numba import njit

    @njit
    def run(src, s_off, s_stride, dst, d_off, d_stride):
        lanes._transpose_block(src, s_off, s_stride, dst, d_off, d_stride)

    v = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    src = rng.random(5 + 23 * v).astype(dtype)
    dst = np.full(7 + 19 * v + v, -1.0, dtype)
    run(src, 5, 23, dst, 7, 19)
    a = np.lib.stride_tricks.as_strided(src[5:], (v, v), (23 * src.itemsize, src.itemsize))
    b = np.lib.stride_tricks.as_strided(dst[7:], (v, v), (19 * dst.itemsize, dst.itemsize))
    assert np.array_equal(b, a.T)
    touched = np.zeros(dst.size, bool)
    for c in range(v):
        touched[7 + 19 * c: 7 + 19 * c + v] = True
    assert (dst[~touched] == -1.0).all()  # nothing written between the rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_intrinsics_against_numpy(dtype):
    from numba import njit

    k = lanes

    @njit
    def run(xt, q, dy, gt, o, w, tx, ty, ot, gxt):
        k._lanes_bilinear(xt, q, dy, ot, o, w[0], w[1], w[2], w[3])
        k._lanes_scatter(gxt, q, dy, gt, o, w[0], w[1], w[2], w[3])
        return k._lanes_coord_grad(xt, q, dy, gt, o, tx, ty)

    v = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(1)
    xt = rng.random(40 * v).astype(dtype)
    gt = rng.normal(size=4 * v).astype(dtype)
    w = rng.random(4).astype(dtype)
    tx, ty = dtype(0.3), dtype(0.8)
    q, dy, o = 3 * v, 20 * v, 2 * v
    ot = np.zeros(4 * v, dtype)
    gxt = rng.random(40 * v).astype(dtype)
    gxt0 = gxt.copy()
    gix, giy = run(xt, q, dy, gt, o, w, tx, ty, ot, gxt)
    x64, g = xt.astype(np.float64), gt[o:o + v].astype(np.float64)
    taps = [x64[q:q + v], x64[q + v:q + 2 * v], x64[q + dy:q + dy + v],
            x64[q + dy + v:q + dy + 2 * v]]
    tol = 1e-6 if dtype == np.float32 else 1e-14
    expect = sum(wi * t for wi, t in zip(w.astype(np.float64), taps))
    assert np.abs(ot[o:o + v] - expect).max() < tol
    assert (ot[:o] == 0).all() and (ot[o + v:] == 0).all()
    ref_x = (g * ((taps[1] - taps[0]) * (1 - 0.8) + (taps[3] - taps[2]) * 0.8)).sum()
    ref_y = (g * ((taps[2] - taps[0]) * (1 - 0.3) + (taps[3] - taps[1]) * 0.3)).sum()
    assert abs(gix - ref_x) < 10 * tol and abs(giy - ref_y) < 10 * tol
    added = gxt.astype(np.float64) - gxt0
    for wi, start in zip(w.astype(np.float64), (q, q + v, q + dy, q + dy + v)):
        assert np.abs(added[start:start + v] - wi * g).max() < tol
        added[start:start + v] = 0
    assert (added == 0).all()  # nothing else written


def _spy_tiles(monkeypatch):
    calls = []
    for name in ("warp_forward_tiles", "warp_forward_tiles_serial", "warp_backward_tiles",
                 "warp_backward_tiles_serial"):
        real = getattr(numba_kernels, name)

        def spy(*args, real=real, name=name):
            calls.append(name)
            return real(*args)
        monkeypatch.setattr(numba_kernels, name, spy)
    return calls


def test_tiles_from_a_full_vector_of_channels(monkeypatch):
    calls = _spy_tiles(monkeypatch)
    for dtype, channels, mode, tiled in [(torch.float32, 16, "bilinear", True),
                                         (torch.float32, 15, "bilinear", False),
                                         (torch.float64, 8, "bilinear", True),
                                         (torch.float64, 7, "bilinear", False),
                                         (torch.float32, 40, "nearest", False)]:
        calls.clear()
        x = torch.rand(2, channels, 5, 6, dtype=dtype, requires_grad=True)
        p = torch.zeros(2, 2, dtype=dtype, requires_grad=True)
        ts.warp(x, p, "translation", backend="numba", mode=mode).sum().backward()
        expected = ["warp_forward_tiles_serial", "warp_backward_tiles_serial"] if tiled else []
        assert calls == expected, (dtype, channels, mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_tiles_match_reference(family, dtype, kernels):
    """One full channel group and a partial one; images narrower and wider than a vector
    (the last transposed block of a row overlaps the one before)."""
    gen = torch.Generator().manual_seed(6)
    lanes = _lanes(dtype)
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for padding, align, (size, out_size) in itertools.product(
        PADDINGS, [False, True], [((9, 11), (7, 13)), ((6, 21), (5, 19))]
    ):
        x = torch.rand(2, lanes + 3, *size, generator=gen, dtype=torch.float64).to(dtype)
        p = _params(family, 2, dtype, gen)
        kw = dict(padding_mode=padding, align_corners=align, out_size=out_size)
        (out, gx, gp), (ref, rgx, rgp) = _both(x, p, family, **kw)
        where = f"{family} {padding} align={align} {size}->{out_size}"
        assert (out - ref).abs().max() <= tol, where
        assert (gx - rgx).abs().max() <= tol * 10, where
        assert (gp - rgp).abs().max() <= tol * 10 * rgp.abs().max().clamp_min(1.0), where


def test_tiles_forward_any_split_into_runs_gives_the_same_output():
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, 20, 12, 17, generator=gen).numpy()
    m = np.tile(np.eye(3), (2, 1, 1))
    m[:, :2] += 0.3 * torch.randn(2, 2, 3, generator=gen, dtype=torch.float64).numpy()
    outs = []
    for runs, tasks in [(1, 1), (1, 4), (2, 3), (3, 1), (5, 30)]:
        out = np.empty((2, 20, 15, 16), np.float32)
        numba_kernels.warp_forward_tiles(x, m, out, False, False, False, 1e-6, runs,
                                          tasks, 0)
        outs.append(out)
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


@pytest.mark.parametrize("padding", PADDINGS)
def test_tiles_forward_reads_samples_outside_the_tile_rows_directly(padding):
    """Tiles too short by 2 or 4 rows a side (the test hook ``shrink``): the samples
    whose rows are missing are read from the input itself, and the output is unchanged
    (bit for bit: both paths add the same products in the same order)."""
    gen = torch.Generator().manual_seed(10)
    for dtype in (np.float32, np.float64):
        x = torch.rand(2, 11, 13, 9, generator=gen, dtype=torch.float64).numpy().astype(dtype)
        m = np.tile(np.eye(3), (2, 1, 1))
        m[:, :2] += 0.3 * torch.randn(2, 2, 3, generator=gen, dtype=torch.float64).numpy()
        outs = []
        for shrink in (0, 2, 4):
            out = np.empty((2, 11, 12, 10), dtype)
            numba_kernels.warp_forward_tiles_serial(x, m, out, padding == "border", False,
                                                     False, 1e-6, 2, 3, shrink)
            outs.append(out)
        ref = ts.warp(torch.from_numpy(x), torch.from_numpy(m[:, :2].reshape(2, 6)), "affine",
                      backend="torch", padding_mode=padding, out_size=(12, 10)).numpy()
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.abs(outs[0] - ref).max() < tol
        for out in outs[1:]:
            assert np.array_equal(out, outs[0])


def test_tiles_ignore_what_earlier_warps_left_in_scratch_memory():
    """Lanes past the channels of a partial group must hold zeros, never values of an
    earlier warp (a NaN there would poison the matrix gradient)."""
    gen = torch.Generator().manual_seed(8)
    p = _params("affine", 3, torch.float32, gen)
    for _ in range(3):
        ts.warp(torch.full((3, 32, 20, 20), float("nan")), p, "affine", backend="numba")
    x = torch.rand(3, 17, 20, 20, generator=gen)
    (out, gx, gp), (ref, rgx, rgp) = _both(x, p, "affine")
    assert torch.isfinite(gp).all()
    assert (gp - rgp).abs().max() <= 1e-4 * rgp.abs().max()


@pytest.mark.parametrize("family", ["affine", "projective"])
def test_tiles_gradcheck(family, kernels):
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(2, 9, 4, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    p = _params(family, 2, torch.float64, gen, spread=0.15).requires_grad_(True)

    def f(x, p):
        return ts.warp(x, p, family, backend="numba", out_size=(3, 9))

    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-5)


def test_backward_any_split_into_tasks_gives_the_same_gradients():
    """The backward kernel's tasks take runs of (image, channel group) pairs and reuse
    their scratch memory from one pair to the next: the split must not show."""
    gen = torch.Generator().manual_seed(11)
    for channels, nearest in [(1, False), (3, False), (20, False), (20, True)]:
        x = torch.rand(5, channels, 9, 12, generator=gen).numpy()
        go = torch.randn(5, channels, 8, 10, generator=gen).numpy()
        m = np.tile(np.eye(3), (5, 1, 1))
        m[:, :2] += 0.3 * torch.randn(5, 2, 3, generator=gen, dtype=torch.float64).numpy()
        groups = -(-channels // numba_kernels.CHANNEL_GROUP)
        results = []
        for tasks in (1, 2, 4, 5 * groups):
            gx = np.full_like(x, np.nan)
            gm = np.zeros((5, groups, 3, 3))
            numba_kernels.warp_backward(x, m, go, gx, gm, True, True, nearest, False, False,
                                         False, 1e-6, False, tasks, np.empty(5 * groups))
            results.append((gx, gm))
        assert np.isfinite(results[0][0]).all()
        for gx, gm in results[1:]:
            assert np.array_equal(gx, results[0][0]) and np.array_equal(gm, results[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_backward_any_split_into_tasks_gives_the_same_gradients(dtype):
    """Tiled backward tasks reuse their tiles from one (image, group) pair to the next:
    no value may carry over, and the split must not show."""
    gen = torch.Generator().manual_seed(12)
    lanes = 64 // np.dtype(dtype).itemsize
    x = torch.rand(5, lanes + 3, 9, 21, generator=gen).numpy().astype(dtype)
    go = torch.randn(5, lanes + 3, 8, 19, generator=gen).numpy().astype(dtype)
    m = np.tile(np.eye(3), (5, 1, 1))
    m[:, :2] += 0.3 * torch.randn(5, 2, 3, generator=gen, dtype=torch.float64).numpy()
    results = []
    for tasks in (1, 2, 3, 10):
        gx = np.full_like(x, np.nan)
        gm = np.zeros((5, 2, 3, 3))
        numba_kernels.warp_backward_tiles(x, m, go, gx, gm, True, True, False, False, False,
                                           1e-6, tasks)
        results.append((gx, gm))
    assert np.isfinite(results[0][0]).all() and np.isfinite(results[0][1]).all()
    for gx, gm in results[1:]:
        assert np.array_equal(gx, results[0][0]) and np.array_equal(gm, results[0][1])


def test_cached_kernels_are_dropped_when_any_kernel_source_changes(tmp_path, monkeypatch):
    """Numba re-checks only a kernel's own file; the digest of all sources catches edits
    of the helpers a kernel inlines from other files."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    for name in numba_backend._KERNEL_SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    cache = tmp_path / "__pycache__"
    numba_backend._drop_stale_cache(str(tmp_path))  # no cache folder yet: made, stamped
    assert [p.name for p in cache.iterdir()] == ["torchstn-kernel-sources.sha256"]
    (cache / "torchstn-kernel-sources.sha256").unlink()

    def fill():
        for name in ("forward.warp_forward-1.py311.nbi", "forward.warp_forward-1.py311.1.nbc"):
            (cache / name).write_bytes(b"compiled")
        (cache / "forward.cpython-311.pyc").write_bytes(b"python")

    fill()
    numba_backend._drop_stale_cache(str(tmp_path))  # no digest yet: dropped, digest written
    assert sorted(p.name for p in cache.iterdir()) == ["forward.cpython-311.pyc",
                                                       "torchstn-kernel-sources.sha256"]
    fill()
    numba_backend._drop_stale_cache(str(tmp_path))  # nothing changed: kept
    assert len(list(cache.glob("*.nb*"))) == 2
    (tmp_path / "coords.py").write_text("# an edited helper\n")
    numba_backend._drop_stale_cache(str(tmp_path))
    assert list(cache.glob("*.nb*")) == []
    assert (cache / "forward.cpython-311.pyc").exists()  # Python's own cache is left alone
