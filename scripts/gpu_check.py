"""The GPU checks of the Triton backend, in one run (see scripts/gpu-check.sh).

Needs only PyTorch, Triton and NumPy (our GPU machine has no package registry): no
pytest, no hypothesis. Prints one line per check and a summary; exits 1 if any failed.

  1. correctness: torchstn.warp(backend="triton") against the float64 reference path for
     every matrix family, mode, padding, align_corners and dtype (float32, float16,
     bfloat16), outputs and both gradients, with contiguous and channels-last inputs;
  2. opcheck of torchstn::triton_warp and torchstn::triton_warp_backward (schema, fake
     tensors, autograd registration, AOT dispatch);
  3. torch.compile(fullgraph=True) with Inductor of a SpatialTransformer of every 2-D
     family (backend="triton"; TPS on the reference path), equal to eager, the Triton
     kernels in the compiled graph;
  4. torch.export with a dynamic batch, run at another batch size; ONNX export too where
     onnxscript is installed, run in onnxruntime;
  5. determinism: under torch.use_deterministic_algorithms(True) the Triton backward is
     allowed and bit-identical run to run (and whether PyTorch's own grid_sample backward
     is allowed is reported);
  6. training on the GPU: every distortion's batches made on the device and a bfloat16
     autocast, channels-last training step of ST-CNN affine (the fused warp), all under
     torch.cuda.set_sync_debug_mode("error"): no host round-trip per batch.

``--device cpu`` runs the same script in Triton's interpreter (TRITON_INTERPRET=1), on
small sizes, skipping what the interpreter cannot trace (3, and 2's AOT dispatch): a
check of the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import traceback

import torch

import torchstn as ts

FAMILIES = ["translation", "attention", "rotation", "similarity", "affine", "projective"]
RESULTS: list[tuple[str, bool, str]] = []


def check(name):
    def wrap(fn):
        def run(*args):
            start = time.perf_counter()
            try:
                detail = fn(*args) or ""
                ok = True
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next
                detail = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                traceback.print_exc()
                ok = False
            seconds = time.perf_counter() - start
            RESULTS.append((name, ok, detail))
            print(f"[{'PASS' if ok else 'FAIL'}] {name} ({seconds:.1f} s) {detail}", flush=True)
        return run
    return wrap


def _params(family, n, generator):
    tf = ts.get_transform(family)
    p = tf.identity(dtype=torch.float64) + 0.3 * torch.randn(n, tf.num_params,
                                                             generator=generator,
                                                             dtype=torch.float64)
    if family == "projective":
        p[:, 6:] *= 0.3
    return p.float()


def _nearest_ties(p64, family, x_shape, out_size, align):
    """(N, Ho, Wo): sample points within 1e-4 pixel of a nearest-neighbour tie."""
    n, _, h, w = x_shape
    grid = ts.get_transform(family).grid(p64, (n, 1, *out_size), align_corners=align)
    size = torch.tensor([w, h], dtype=torch.float64)
    pix = (grid + 1) / 2 * (size - 1) if align else ((grid + 1) * size - 1) / 2
    return ((pix - pix.floor() - 0.5).abs() < 1e-4 * pix.abs().clamp_min(1)).any(-1)


@check("1. triton against the float64 reference")
def correctness(device, quick):
    gen = torch.Generator().manual_seed(0)
    worst = {}
    sizes = [(2, 3, 9, 11, (7, 13))] if quick else [(2, 3, 9, 11, (7, 13)),
                                                     (4, 16, 33, 47, (20, 60))]
    for family, mode, padding, align, dtype, layout, (n, c, h, w, out) in itertools.product(
            FAMILIES, ["bilinear", "nearest"], ["zeros", "border"], [False, True],
            [torch.float32, torch.float16, torch.bfloat16], ["contiguous", "channels_last"],
            sizes):
        x = torch.rand(n, c, h, w, generator=gen).to(dtype)
        p = _params(family, n, gen)
        g = torch.randn(n, c, *out, generator=gen).to(dtype)
        kw = dict(out_size=out, mode=mode, padding_mode=padding, align_corners=align)
        x64, p64 = x.double().requires_grad_(True), p.double().requires_grad_(True)
        ref = ts.warp(x64, p64, family, backend="torch", **kw)
        rgx, rgp = torch.autograd.grad(ref, (x64, p64), g.double())
        xd = x.to(device)
        if layout == "channels_last":
            xd = xd.contiguous(memory_format=torch.channels_last)
        xd = xd.requires_grad_(True)
        pd = p.to(device).requires_grad_(True)
        out_t = ts.warp(xd, pd, family, backend="triton", **kw)
        gx, gp = torch.autograd.grad(out_t, (xd, pd), g.to(device))
        eps = torch.finfo(dtype).eps if dtype != torch.float32 else 1e-5
        out_t, gx, gp, ref, rgx, rgp = (t.detach() for t in (out_t, gx, gp, ref, rgx, rgp))
        errs = {"out": (out_t.double().cpu() - ref).abs().max(),
                "gx": (gx.double().cpu() - rgx).abs().max() / rgx.abs().max().clamp_min(1),
                "gp": (gp.double().cpu() - rgp).abs().max() / rgp.abs().max().clamp_min(1)}
        limits = {"out": 4 * eps, "gx": 8 * eps, "gp": max(1e-3, 8 * eps)}
        if mode == "nearest":
            # Pixels within rounding of a tie between two neighbours may pick either: the
            # output there, and every gradient, are not compared.
            tie = _nearest_ties(p.double(), family, (n, c, h, w), out, align)
            keep = ~tie[:, None].expand_as(ref)
            diff = (out_t.double().cpu() - ref)[keep].abs()
            errs["out"] = diff.max() if diff.numel() else torch.tensor(0.0)
            errs.pop("gx"), errs.pop("gp")
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), float(v))
            assert v <= limits[k], (f"{family} {mode} {padding} align={align} {dtype} "
                                    f"{layout}: {k} error {float(v):.3g} > {limits[k]:.3g}")
    return "worst relative errors: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())


@check("2. opcheck of the Triton operators")
def opcheck(device, quick):
    utils = ["test_schema", "test_autograd_registration", "test_faketensor"]
    if device == "cuda":
        utils += ["test_aot_dispatch_static", "test_aot_dispatch_dynamic"]
    from torchstn.ops.triton.backend import register_ops

    register_ops()
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(2, 3, 5, 6, generator=gen).to(device, dtype).requires_grad_(True)
        m = ts.get_transform("projective").matrix(_params("projective", 2, gen))
        m = m.to(device).requires_grad_(True)
        torch.library.opcheck(torch.ops.torchstn.triton_warp.default,
                              (x, m, 4, 7, False, True, False, True), test_utils=utils)
        go = torch.randn(2, 3, 4, 7, generator=gen).to(device, dtype)
        torch.library.opcheck(torch.ops.torchstn.triton_warp_backward.default,
                              (go, x.detach(), m.detach(), False, True, False, True, True,
                               True), test_utils=utils)
    return ", ".join(utils)


def _stn(family, backend, device):
    torch.manual_seed(0)
    stn = ts.SpatialTransformer(None, family, in_channels=3, loc_features=64,
                                backend=backend, out_size=(24, 20)).to(device)
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.02)
    return stn


@check("3. torch.compile(fullgraph=True), Inductor, every family")
def compile_(device, quick):
    if device != "cuda":
        return "skipped: the interpreter cannot be traced"
    from torch._inductor.utils import run_and_get_code

    lines = []
    for family in FAMILIES + ["tps"]:
        backend = "torch" if family == "tps" else "triton"
        torch._dynamo.reset()
        stn = _stn(family, backend, device)
        x = torch.rand(8, 3, 32, 28, device=device, requires_grad=True)
        compiled = torch.compile(stn, fullgraph=True)
        out, code = run_and_get_code(compiled, x)
        ref = stn(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, [x, *stn.parameters()], g)
        want = torch.autograd.grad(ref, [x, *stn.parameters()], g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        source = "\n".join(code)
        if backend == "triton":
            for kernel in ("warp_fwd_kernel", "warp_bwd_kernel"):
                assert kernel in source, f"{family}: {kernel} is not in the compiled code"
        lines.append(family)
    return "equal to eager, kernels in the graph: " + " ".join(lines)


@check("4. torch.export (dynamic batch) and ONNX")
def export(device, quick):
    from torch.export import Dim

    done = []
    for family in FAMILIES + ["tps"]:
        backend = "torch" if family == "tps" else "triton"
        if device != "cuda" and backend == "triton":
            continue
        stn = _stn(family, backend, device).eval()
        x = torch.rand(3, 3, 32, 28, device=device)
        program = torch.export.export(stn, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
        other = torch.rand(5, 3, 32, 28, device=device)
        torch.testing.assert_close(program.module()(other), stn(other), rtol=1e-5, atol=1e-5)
        done.append(family)
    try:
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return f"export: {' '.join(done)}; ONNX skipped (onnxscript or onnxruntime missing)"
    import tempfile

    from torchstn.export import export_onnx

    stn = _stn("affine", "triton" if device == "cuda" else "torch", device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(stn, (torch.rand(3, 3, 32, 28, device=device),), f"{tmp}/m.onnx")
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        other = torch.rand(5, 3, 32, 28)
        got = session.run(None, {session.get_inputs()[0].name: other.numpy()})[0]
        err = abs(got - stn(other.to(device)).detach().cpu().numpy()).max()
    assert err <= 1e-5, f"ONNX differs from eager by {err:.2e}"
    return f"export: {' '.join(done)}; ONNX (affine) matches to {err:.1e}"


@check("5. determinism under torch.use_deterministic_algorithms(True)")
def determinism(device, quick):
    torch.use_deterministic_algorithms(True)
    try:
        gen = torch.Generator().manual_seed(2)
        x = torch.rand(16, 32, 64, 64, generator=gen).to(device)
        p = _params("projective", 16, gen).to(device)
        g = torch.randn(16, 32, 48, 48, generator=gen).to(device)
        runs = []
        for _ in range(3):
            xi, pi = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
            out = ts.warp(xi, pi, "projective", out_size=(48, 48), backend="triton")
            runs.append((out, *torch.autograd.grad(out, (xi, pi), g)))
        for a, b in zip(runs[0], runs[1]):
            assert torch.equal(a, b), "not bit-identical"
        for a, b in zip(runs[0], runs[2]):
            assert torch.equal(a, b), "not bit-identical"
        try:
            xi, pi = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
            out = ts.warp(xi, pi, "projective", out_size=(48, 48), backend="torch")
            torch.autograd.grad(out, (xi, pi), g)
            torch_says = "allowed"
        except RuntimeError:
            torch_says = "refused (not deterministic)"
    finally:
        torch.use_deterministic_algorithms(False)
    return f"triton: bit-identical over 3 runs; PyTorch's grid_sample backward: {torch_says}"


@check("6. batches made on the GPU and a bf16 channels-last step, with no host sync")
def gpu_training(device, quick):
    from torchstn.experiments.config import OptimConfig
    from torchstn.experiments.data.distortions import distort, output_size
    from torchstn.experiments.engine.loop import autocast
    from torchstn.experiments.models import build_model
    from torchstn.experiments.optim import build_optimizer

    if device != "cuda":
        return "skipped (needs CUDA)"
    gen = torch.Generator().manual_seed(3)
    digits = torch.randint(0, 256, (512, 28, 28), dtype=torch.uint8, generator=gen).cuda()
    y = torch.randint(0, 10, (256,), generator=gen).cuda()
    shown = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name in ("r", "rts", "p", "e", "tc"):
            idx = torch.randperm(512, generator=gen)[:256].pin_memory().cuda(non_blocking=True)
            x, _ = distort(digits[idx], name, gen, pool=digits)
            assert x.shape == (256, 1, output_size(name), output_size(name)), x.shape
            shown.append(name)
        model = build_model("st-cnn-affine", 42, st_downsample=True).cuda()
        model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, OptimConfig(optimizer="adamw", lr=1e-3))
        for _ in range(3):
            x, _ = distort(digits[:256], "rts", gen, pool=digits)
            with autocast("bf16", torch.device("cuda")):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
    return f"distortions {' '.join(shown)} and 3 training steps, no synchronisation"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu (under TRITON_INTERPRET=1) to check "
              "the script only", file=sys.stderr)
        return 2
    quick = args.device == "cpu"
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (interpreter)"
    print(f"torch {torch.__version__}, {name}")
    for step in (correctness, opcheck, compile_, export, determinism, gpu_training):
        step(args.device, quick)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
