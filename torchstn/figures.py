"""Figures of a trained run: what the transformer does, and the training curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .viz import draw_grid, pyplot, save_figure

__all__ = ["curves_figure", "save_run_figures", "transformer_figure"]


@torch.no_grad()
def transformer_figure(model: nn.Module, x: torch.Tensor, path, *, n: int = 10,
                       title: str = "") -> Path:
    """Distorted inputs (sampling grid drawn over them) above the transformer's outputs.

    ``x``: uint8 test images ``(N, 1, S, S)``; the first ``n`` are shown. Models without a
    transformer show the inputs only.
    """
    plt = pyplot()
    xb = x[:n].float() / 255
    stn = getattr(model, "stn", None)
    rows = 2 if stn is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.6 * rows + 0.5), squeeze=False)
    if stn is not None:
        model.eval()
        out, params = stn(xb, return_params=True)
        grid = stn.transform.grid(params, out.shape, align_corners=stn.align_corners)
    for i in range(n):
        axes[0, i].imshow(xb[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        if stn is not None:
            draw_grid(axes[0, i], grid[i], xb.shape[-2:], align_corners=stn.align_corners,
                      lines=6)
            axes[1, i].imshow(out[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=9)
    if stn is not None:
        side = out.shape[-1]
        axes[1, 0].set_ylabel(f"ST output\n{side}x{side}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return saved


def curves_figure(history: list[dict], path, *, title: str = "") -> Path:
    """Training loss and train / test error per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(epochs, [h["train_error"] for h in history], "o-", label="train")
    b.plot(epochs, [h["test_error"] for h in history], "s-", label="test")
    b.set_yscale("log")
    b.set_xlabel("epoch")
    b.set_ylabel("error (%)")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return saved


def save_run_figures(out, model: nn.Module, test_x: torch.Tensor, history: list[dict],
                     cfg=None) -> list[Path]:
    """``out/transformer.png`` and ``out/curves.png`` of a run."""
    out = Path(out)
    last = history[-1] if history else None
    label = ""
    if cfg is not None:
        label = f"{cfg.model} on {cfg.dataset} {cfg.distortion.upper()}"
    if last is not None:
        label += f" - test error {last['test_error']:.2f}% after {last['epoch']} epochs"
    paths = [transformer_figure(model, test_x, out / "transformer.png", title=label)]
    if history:
        paths.append(curves_figure(history, out / "curves.png", title=label))
    return paths
