"""Fused affine warp against PyTorch's affine_grid + grid_sample, side by side in one run.

Usage:
    python benchmarks/bench_sampler.py [--device cpu|cuda] [--repeats 15] [--threads T]
                                       [--shapes 256x1x28x28 ...]

For each shape (N, C, H, W) it times, on the same random inputs and an affine theta near
the identity, bilinear sampling with zeros padding:
  fwd      forward only (no autograd graph),
  fwd+bwd  forward + backward to theta and to the input,
  fwd+bwd (no dx)  forward + backward to theta only (a first layer: input needs no grad),
and prints the median of each for PyTorch and for the fused path, their ratio
(PyTorch / fused, > 1 means the fused path is faster), and the effective bandwidth of
the forward pass (input bytes read once + output bytes written once, over time) next to
a plain copy of the same bytes. The fused path is torchstn.warp(..., backend=B) with
B = numba on the CPU and triton on CUDA. Timings use CUDA events on the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import torchstn

CPU_SHAPES = ["256x1x28x28", "256x1x42x42", "64x3x224x224", "8x3x512x512", "32x64x56x56"]
CUDA_SHAPES = ["256x1x28x28", "64x3x224x224", "8x3x512x512", "32x64x56x56"]


def _time_once(device: str, fn) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _side_by_side(device: str, fns, repeats: int, inputs: int) -> list[float]:
    """Median seconds of each ``fn(k)``, calls interleaved so all see the same machine state.

    ``k`` cycles through ``inputs`` input sets; three warm-up rounds (compiles) first.
    """
    for k in range(3):
        for fn in fns:
            fn(k % inputs)
    times = [[] for _ in fns]
    for r in range(repeats):
        for fn, out in zip(fns, times):
            out.append(_time_once(device, lambda fn=fn: fn(r % inputs)))
    return [statistics.median(t) for t in times]


def _theta(n: int, device, generator) -> torch.Tensor:
    """Affine matrices near the identity, parameterised as the 'affine' family's (N, 6)."""
    eye = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    noise = 0.1 * torch.randn(n, 6, generator=generator)
    return (eye + noise).to(device)


def bench_shape(shape, device: str, backend: str, repeats: int, inputs: int = 3) -> dict:
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(shape, generator=gen).to(device) for _ in range(inputs)]
    ps = [_theta(n, device, gen) for _ in range(inputs)]
    gos = [torch.randn(shape, generator=gen).to(device) for _ in range(inputs)]
    size = (n, c, h, w)

    def torch_path(x, p):
        theta = p.view(n, 2, 3)
        grid = F.affine_grid(theta, size, align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    def fused_path(x, p):
        return torchstn.warp(x, p, "affine", backend=backend)

    def fwd(path):
        def run(k):
            with torch.no_grad():
                path(xs[k], ps[k])
        return run

    def fwd_bwd(path, input_grad: bool):
        def run(k):
            x = xs[k].detach().requires_grad_(input_grad)
            p = ps[k].detach().requires_grad_(True)
            path(x, p).backward(gos[k])
        return run

    row = {}
    for label, make in [("fwd", fwd), ("fwd+bwd", lambda p: fwd_bwd(p, True)),
                        ("fwd+bwd (no dx)", lambda p: fwd_bwd(p, False))]:
        row[label] = tuple(_side_by_side(device, [make(torch_path), make(fused_path)],
                                         repeats, inputs))
    dst = torch.empty_like(xs[0])
    row["copy"] = _side_by_side(device, [lambda k: dst.copy_(xs[k])], repeats, inputs)[0]
    src = xs[0]
    row["bytes"] = 2 * src.numel() * src.element_size()  # read input + write output
    return row


def bench_train_step(device: str, backend: str, repeats: int) -> None:
    """One Adam step of st-cnn-affine (batch 256) with the transformer on each path."""
    from torchstn.experiments.models import build_model

    print(f"\n| model | input | PyTorch step ms | {backend} step ms | ratio |")
    print("|---|---|---|---|---|")
    for size, downsample in [(28, False), (42, True), (60, True)]:
        gen = torch.Generator().manual_seed(0)
        xs = [torch.rand(256, 1, size, size, generator=gen).to(device) for _ in range(2)]
        ys = [torch.randint(0, 10, (256,), generator=gen).to(device) for _ in range(2)]
        torch.manual_seed(0)
        model = build_model("st-cnn-affine", size, st_downsample=downsample).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-4)

        def step(path):
            def run(k):
                model.stn.backend = path
                loss = F.cross_entropy(model(xs[k]), ys[k])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return run

        t_ref, t_fused = _side_by_side(device, [step("torch"), step(backend)], repeats, 2)
        print(f"| st-cnn-affine | {size}x{size} | {1e3 * t_ref:.1f} | {1e3 * t_fused:.1f} | "
              f"{t_ref / t_fused:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shapes", nargs="+", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = "numba" if args.device == "cpu" else "triton"
    shapes = args.shapes or (CPU_SHAPES if args.device == "cpu" else CUDA_SHAPES)
    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, {where}; affine, bilinear, zeros, float32; median of "
          f"{args.repeats}; ratio = PyTorch time / {backend} time\n")
    print("| N x C x H x W | pass | PyTorch ms | fused ms | ratio | fused GB/s | copy GB/s |")
    print("|---|---|---|---|---|---|---|")
    for text in shapes:
        shape = tuple(int(v) for v in text.split("x"))
        row = bench_shape(shape, args.device, backend, args.repeats)
        copy_bw = row["bytes"] / row["copy"] / 1e9
        for label in ("fwd", "fwd+bwd", "fwd+bwd (no dx)"):
            t_ref, t_fused = row[label]
            bw = f"{row['bytes'] / t_fused / 1e9:.1f}" if label == "fwd" else ""
            cbw = f"{copy_bw:.1f}" if label == "fwd" else ""
            print(f"| {text} | {label} | {1e3 * t_ref:.2f} | {1e3 * t_fused:.2f} | "
                  f"{t_ref / t_fused:.2f}x | {bw} | {cbw} |", flush=True)
    bench_train_step(args.device, backend, args.repeats)
    if args.device == "cpu":
        from torchstn.ops.numba import compile_seconds

        print("\nfirst call of each kernel (compile, or load from Numba's cache): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in compile_seconds.items()))


if __name__ == "__main__":
    main()
