"""The demo: warp a real MNIST digit with every 2-D transform family and save a figure."""

from __future__ import annotations

import math
import os

import torch

from torchstn.transforms import get_transform, list_transforms
from torchstn.warping import warp

from ..data import load_idx_dataset
from ..plots.viz import draw_grid, pyplot, save_figure

__all__ = ["demo_params", "run_demo"]


def demo_params(name: str) -> torch.Tensor:
    """Illustrative parameters ``(1, num_params)`` for a 2-D family (fixed, for the figure)."""
    fixed = {
        "translation": [0.35, -0.25],
        "attention": [math.log(0.55), 0.15, 0.1],
        "rotation": [0.7, 0.0, 0.0],
        "similarity": [-0.5, math.log(1.3), 0.1, 0.0],
        "affine": [1.0, 0.45, 0.0, 0.15, 0.85, 0.05],
        "projective": [1.0, 0.1, 0.0, 0.0, 1.0, 0.0, 0.55, 0.35],
    }
    if name in fixed:
        return torch.tensor([fixed[name]])
    tf = get_transform(name)
    gen = torch.Generator().manual_seed(0)
    return tf.identity()[None] + 0.12 * torch.randn(1, tf.num_params, generator=gen)


def run_demo(out: str | os.PathLike = "demo.png", *, data_dir=None, index: int = 0,
             out_size: int = 40) -> dict[str, torch.Tensor]:
    """Warp MNIST test digit ``index`` by each 2-D family; save the figure to ``out``.

    Each column shows the input with the sampling grid drawn over it (where the output
    reads from) above the warped output (``out_size`` x ``out_size``). Returns the warped
    images by family name.
    """
    images, labels = load_idx_dataset("mnist", "test", data_dir)
    x = images[index].float().div(255)[None, None]  # (1, 1, 28, 28)
    names = [n for n in list_transforms() if get_transform(n).ndim == 2]
    plt = pyplot()
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(2.0 * (len(names) + 1), 4.3))
    axes[0, 0].imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"input (label {int(labels[index])})", fontsize=9)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, f"outputs\n{out_size} x {out_size}", ha="center", va="center",
                    fontsize=10, transform=axes[1, 0].transAxes)
    outputs = {}
    for col, name in enumerate(names, start=1):
        tf = get_transform(name)
        params = demo_params(name)
        size = (1, 1, out_size, out_size)
        grid = tf.grid(params, size)
        y = warp(x, params, tf, out_size=size[2:])
        outputs[name] = y
        axes[0, col].imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        draw_grid(axes[0, col], grid[0], x.shape[-2:])
        axes[0, col].set_title(name, fontsize=9)
        axes[1, col].imshow(y[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("torchstn: one MNIST digit through every 2-D transform family "
                 "(top: sampling grid over the input; bottom: output)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=130)
    plt.close(fig)
    return outputs
