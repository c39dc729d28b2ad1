"""Aliasing removed by anti-aliased sampling, measured on a zone plate (a chirp).

Usage:
    python scripts/antialias_zoneplate.py [--size 256] [--figure docs/antialias-zoneplate.png]

A 256 x 256 zone plate (its local frequency rises from 0 at the centre to the Nyquist
limit at the edges) is minified 2x to 8x, axis-aligned and rotated by 30 degrees, and
through a homography whose shrink varies over the output (1.3x to about 6x). Each method's
output is compared with a dense float64 reference: every output pixel split into 16 x 16
cells, each cell's centre mapped exactly and sampled bilinearly, averaged (the average of
the bilinearly interpolated image over the pixel's exact footprint). Methods:

- plain: bilinear sampling (grid_sample), what a spatial transformer does by default;
- pyramid: a mip-map (2x2 averages) sampled trilinearly at the level of the footprint's
  longer edge (isotropic: blurs anisotropic footprints);
- supersample d=1: ``torchstn.sample(..., antialias=True)``, one point per input pixel
  along each footprint edge;
- supersample d=2: the same at two points per pixel (4x the samples).

Prints the RMS error of each against the reference (the zone plate spans 0..1), the time
of each on the CPU, and draws the 4x rotated case.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from torchstn.antialias import antialiased_sample, footprint
from torchstn.experiments.engine.loop import cpu_line

D64 = torch.float64


def zone_plate(size: int) -> torch.Tensor:
    """0.5 + 0.5 cos(a r^2): local frequency a r / pi cycles per pixel, 0.5 (the Nyquist
    limit) at the edge midpoints (r = size / 2)."""
    c = torch.arange(size, dtype=D64) - (size - 1) / 2
    r2 = c[None, :] ** 2 + c[:, None] ** 2
    return (0.5 + 0.5 * torch.cos(math.pi / size * r2))[None, None]


def grid_of(m: torch.Tensor, ho: int, wo: int) -> torch.Tensor:
    base = F.affine_grid(torch.eye(2, 3, dtype=m.dtype)[None], (1, 1, ho, wo),
                         align_corners=False)
    h = torch.cat([base, torch.ones_like(base[..., :1])], -1) @ m.transpose(1, 2)[:, None]
    return h[..., :2] / h[..., 2:]


def dense(x, m, ho, wo, cells=16):
    fine = grid_of(m, ho * cells, wo * cells)
    return F.avg_pool2d(F.grid_sample(x, fine, align_corners=False), cells)


def pyramid(x, grid):
    levels = [x]
    while min(levels[-1].shape[2:]) > 1:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True))
    ex, ey = footprint(grid, x.shape[2:])
    longest = torch.maximum(ex.norm(dim=-1), ey.norm(dim=-1)).clamp(min=1)
    lam = torch.log2(longest).clamp(max=len(levels) - 1)[:, None]
    out = torch.zeros(x.shape[0], x.shape[1], *grid.shape[1:3], dtype=x.dtype)
    for i, level in enumerate(levels):
        weight = (1 - (lam - i).abs()).clamp(min=0)
        if weight.max() > 0:
            out = out + weight * F.grid_sample(level, grid, align_corners=False)
    return out


METHODS = {
    "plain": lambda x, g: F.grid_sample(x, g, align_corners=False),
    "pyramid": pyramid,
    "supersample d=1": lambda x, g: antialiased_sample(x, g),
    "supersample d=2": lambda x, g: antialiased_sample(x, g, density=2.0),
}


def cases(size: int):
    for s in (2, 3, 4, 6, 8):
        out = round(size / s)
        for angle in (0, 30):
            a = math.radians(angle)
            m = torch.tensor([[[math.cos(a), -math.sin(a), 0.0],
                               [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]]], dtype=D64)
            yield f"{s}x, {angle} deg", m, out
    # A plane tilted away: the shrink grows from bottom to top of the output.
    m = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -0.6, 1.0]]], dtype=D64)
    yield "homography", m, size // 4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--figure", default=None, help="write the 4x rotated case here")
    args = parser.parse_args(argv)
    x = zone_plate(args.size)
    print(cpu_line())
    print(f"zone plate {args.size} x {args.size}, RMS error against the dense reference "
          "(16 x 16 cells per output pixel)\n")
    names = list(METHODS)
    print("| case | output | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    seconds = dict.fromkeys(names, 0.0)
    shown = None
    for label, m, out in cases(args.size):
        ref = dense(x, m, out, out)
        g = grid_of(m, out, out)
        row = []
        results = {}
        for name in names:
            start = time.perf_counter()
            y = METHODS[name](x, g)
            seconds[name] += time.perf_counter() - start
            results[name] = y
            row.append(f"{((y - ref) ** 2).mean().sqrt().item():.4f}")
        print(f"| {label} | {out} x {out} | " + " | ".join(row) + " |")
        if label == "4x, 30 deg":
            shown = ref, results
    print("\nseconds, all cases (float64, CPU): "
          + ", ".join(f"{n} {seconds[n]:.2f}" for n in names))
    if args.figure and shown is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ref, results = shown
        panels = [("dense reference", ref)] + [(n, results[n]) for n in
                                               ("plain", "pyramid", "supersample d=1")]
        fig, axes = plt.subplots(2, len(panels), figsize=(3 * len(panels), 6.2))
        for col, (name, img) in enumerate(panels):
            axes[0, col].imshow(img[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[0, col].set_title(name, fontsize=10)
            err = (img - ref)[0, 0].abs().numpy()
            axes[1, col].imshow(err, cmap="magma", vmin=0, vmax=0.5)
            rms = float(((img - ref) ** 2).mean().sqrt())
            axes[1, col].set_title(f"|error|, RMS {rms:.3f}", fontsize=10)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"Zone plate {args.size} px minified 4x, rotated 30 degrees", fontsize=11)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
