"""A transformer on 512 x 512 x 3 images: the seed's way against a glimpse, side by side.

Usage:
    python benchmarks/bench_glimpse.py [--suite seed|zoom] [--batch 8] [--repeats 5]
                                       [--threads T]

The seed's module: a BatchNorm-ReLU convolutional localisation net on the full 512 x 512
image, fc 1024 -> 128 -> 6 (affine), and an output of the input's size (512 x 512). The
glimpse: the same localisation net on a 128 x 128 anti-aliased copy (``loc_size``), an
output of 128 x 128 or 64 x 64 read from the full-resolution input, with and without
``antialias``. Each configuration runs in its own process (so that its peak memory is
its own) and reports the median time of a forward pass and of a forward + backward pass
(loss: the mean of the output), and the process's peak resident memory.

``--suite zoom``: the needle task's models (``torchstn train --task needle``, the
defaults: 512 x 512 x 3 images, a classifier input of 64, localisation on 128, width 32),
each front in its own process: the median time of a training step (forward, backward,
Adam) and of an evaluation forward pass, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "seed: loc 512, out 512": dict(loc_size=None, out_size=(512, 512), antialias=False),
    "glimpse: loc 128, out 128": dict(loc_size=(128, 128), out_size=(128, 128),
                                      antialias=False),
    "glimpse: loc 128, out 128, antialias": dict(loc_size=(128, 128), out_size=(128, 128),
                                                 antialias=True),
    "glimpse: loc 128, out 64, antialias": dict(loc_size=(128, 128), out_size=(64, 64),
                                                antialias=True),
}


def seed_localization():
    """Conv-BN-ReLU x 4 (stride 2), pooled to 64 x 4 x 4 = 1024 features, fc 1024 -> 128."""
    from torch import nn

    layers, c = [], 3
    for width in (16, 32, 64, 64):
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(1024, 128),
                        nn.ReLU())
    net.out_features = 128
    return net


def run_one(name: str, batch: int, repeats: int) -> dict:
    import torch

    import torchstn

    torch.manual_seed(0)
    stn = torchstn.SpatialTransformer(seed_localization(), "affine", **CONFIGS[name])
    with torch.no_grad():
        stn.head.bias.copy_(torch.tensor([0.5, 0.1, 0.1, -0.1, 0.5, 0.0]))  # a zoomed-out crop
    x = torch.rand(batch, 3, 512, 512)
    times = {"forward": [], "forward+backward": []}
    for i in range(repeats + 1):
        start = time.perf_counter()
        with torch.no_grad():
            stn(x)
        forward = time.perf_counter() - start
        start = time.perf_counter()
        stn(x).mean().backward()
        both = time.perf_counter() - start
        if i:  # the first round warms up
            times["forward"].append(forward)
            times["forward+backward"].append(both)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {k: statistics.median(v) for k, v in times.items()} | {"peak_mb": peak_mb}


def run_zoom(front: str, batch: int, repeats: int) -> dict:
    """A needle model's training step and evaluation forward pass, and the peak memory."""
    import torch
    import torch.nn.functional as F

    from torchstn.experiments.zoom import build_zoom_model

    torch.manual_seed(0)
    model = build_zoom_model(front, in_channels=3, num_classes=10, input_size=64,
                             loc_size=128, width=32)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, 3, 512, 512)
    y = torch.randint(0, 10, (batch,))
    times = {"train step": [], "eval forward": []}
    for i in range(repeats + 1):
        model.train()
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step = time.perf_counter() - start
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        forward = time.perf_counter() - start
        if i:  # the first round warms up (and compiles the kernels)
            times["train step"].append(step)
            times["eval forward"].append(forward)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {k: statistics.median(v) for k, v in times.items()} | {"peak_mb": peak_mb}


def zoom_table(args) -> None:
    from torchstn.experiments.zoom import FRONTS

    print(f"needle models: batch {args.batch} x 3 x 512 x 512, float32, median of "
          f"{args.repeats}\n")
    print("| front | train step ms | images/s | eval forward ms | peak memory MB |")
    print("|---|---|---|---|---|")
    for front in FRONTS:
        r = _in_process(front, "zoom", args)
        if "failed" in r:
            print(f"| {front} | failed: {r['failed']} | | | |")
            continue
        print(f"| {front} | {1000 * r['train step']:.0f} | {args.batch / r['train step']:.1f} "
              f"| {1000 * r['eval forward']:.0f} | {r['peak_mb']:.0f} |", flush=True)


def _in_process(name: str, suite: str, args) -> dict:
    """``run_one`` or ``run_zoom`` of ``name`` in a process of its own (its own peak)."""
    cmd = [sys.executable, __file__, "--one", name, "--suite", suite, "--batch",
           str(args.batch), "--repeats", str(args.repeats)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode:
        return {"failed": (out.stderr.strip().splitlines() or ["no message"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["seed", "zoom"], default="seed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        run = run_zoom if args.suite == "zoom" else run_one
        print(json.dumps(run(args.one, args.batch, args.repeats)))
        return
    from torchstn.experiments.engine.loop import cpu_line

    print(cpu_line())
    if args.suite == "zoom":
        zoom_table(args)
        return
    print(f"batch {args.batch} x 3 x 512 x 512, float32, median of {args.repeats}\n")
    print("| module | forward ms | forward + backward ms | peak memory MB |")
    print("|---|---|---|---|")
    base = None
    for name in CONFIGS:
        r = _in_process(name, "seed", args)
        if "failed" in r:
            print(f"| {name} | failed: {r['failed']} | | |")
            continue
        base = base or r
        print(f"| {name} | {1000 * r['forward']:.0f} | {1000 * r['forward+backward']:.0f} "
              f"({base['forward+backward'] / r['forward+backward']:.1f}x) | "
              f"{r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
