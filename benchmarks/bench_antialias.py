"""Anti-aliased warps: the fused CPU kernels against the same computation in PyTorch ops.

Usage:
    python benchmarks/bench_antialias.py [--batch 8] [--repeats 9] [--threads T]
                                         [--sizes 64 128 224]

For 512 x 512 x 3 float32 images (a batch of ``--batch``) read into each output size,
it times, side by side on the same inputs (calls interleaved, median of ``--repeats``):

- ``PyTorch``: ``torchstn.warp(..., antialias=True, backend="torch")``: the affine grid,
  then :func:`torchstn.antialias.antialiased_sample` (footprint supersampling written in
  PyTorch ops: the supersampling points, one ``grid_sample`` over all of them, the
  weighted mean);
- ``fused``: the same warp on ``backend="numba"`` (the ``torchstn::numba_warp_antialias``
  operator: one kernel, no grid or points in memory);
- ``plain``: the fused warp without ``antialias`` (what anti-aliasing costs).

Two views: the whole image (a zoom out by 512 / size: up to 8 x 8 points per output
pixel at 64) and a crop of half the image turned by 30 degrees (4 x 4 at 64). Passes:
``fwd`` (no autograd graph) and ``fwd+bwd`` (the loss is the output's weighted sum;
gradients to the input and the parameters). Prints the CPU (model, flags) first.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import torchstn
from torchstn.experiments.engine.loop import cpu_line

VIEWS = {
    "whole image": (1.0, 0.0),
    "half, turned 30 deg": (0.5, math.radians(30)),
}


def _params(scale: float, angle: float, n: int) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, 0.05, s, c, -0.05]]).repeat(n, 1)


def _median_side_by_side(fns, repeats: int) -> list[float]:
    for fn in fns:  # warm-up (compiles)
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench(batch: int, size: int, view: str, repeats: int) -> dict:
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 512, 512)
    p = _params(*VIEWS[view], batch)
    weight = torch.randn(batch, 3, size, size)

    def fwd(backend, antialias):
        def run():
            with torch.no_grad():
                torchstn.warp(x, p, "affine", out_size=(size, size), antialias=antialias,
                              backend=backend)
        return run

    def fwd_bwd(backend, antialias):
        def run():
            xs, ps = x.clone().requires_grad_(), p.clone().requires_grad_()
            out = torchstn.warp(xs, ps, "affine", out_size=(size, size), antialias=antialias,
                                backend=backend)
            (out * weight).sum().backward()
        return run

    result = {}
    for label, make in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        result[label] = _median_side_by_side(
            [make("torch", True), make("numba", True), make("numba", False)], repeats)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_line())
    print(f"torch {torch.__version__}; {args.batch} x 3 x 512 x 512 float32, affine, "
          f"bilinear, zeros; median of {args.repeats}; ratio = PyTorch / fused\n")
    print("| view | output | pass | PyTorch ms | fused ms | ratio | plain fused ms |")
    print("|---|---|---|---|---|---|---|")
    for view in VIEWS:
        for size in args.sizes:
            row = bench(args.batch, size, view, args.repeats)
            for label, (ref, fused, plain) in row.items():
                print(f"| {view} | {size} x {size} | {label} | {1e3 * ref:.1f} | "
                      f"{1e3 * fused:.1f} | {ref / fused:.1f}x | {1e3 * plain:.1f} |",
                      flush=True)
    from torchstn.ops.numba import compile_seconds

    print("\nfirst call of each kernel (compile, or load from Numba's cache): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in compile_seconds.items()))


if __name__ == "__main__":
    main()
