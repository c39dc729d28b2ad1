"""Figures of a trained run: what every transformer does, and the training curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchstn.modules import find_transformers
from torchstn.multi import ParallelTransformer

from .viz import draw_grid, pyplot, save_figure

__all__ = ["capture_transformers", "colocalization_figure", "curves_figure",
           "glimpse_rectangle", "glimpse_tracks_figure", "house_numbers_figure", "input_regions",
           "projection_figure", "rotation_scatter_figure", "save_run_figures", "save_views",
           "transformer_figure"]


def _save(plt, fig, path, title: str) -> Path:
    """The title, the layout, saved; the figure closed."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return saved


def _finish(plt, fig, axes, path, title: str) -> Path:
    """Image panels without ticks, the title, saved; the figure closed."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(plt, fig, path, title)


def _image(t: torch.Tensor):
    """One picture of a ``(C, H, W)`` input or feature map: the image for 1 or 3 channels,
    red and green for 2 (the two digits of MNIST addition), else the mean absolute
    activation."""
    t = t.detach().float().cpu()
    if t.shape[0] == 3:
        return t.permute(1, 2, 0).clamp(0, 1).numpy(), {}
    if t.shape[0] == 1:
        return t[0].numpy(), {"cmap": "gray", "vmin": 0, "vmax": 1}
    if t.shape[0] == 2:  # two images (MNIST addition): red and green
        return torch.stack([t[0], t[1], torch.zeros_like(t[0])], -1).clamp(0, 1).numpy(), {}
    return t.abs().mean(0).numpy(), {"cmap": "magma"}


@torch.no_grad()
def capture_transformers(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Run ``model`` on ``x`` and record what each of its spatial transformers saw.

    Returns one dict per transformer of :func:`torchstn.find_transformers`, in order (a
    :class:`~torchstn.ParallelTransformer` gives one per member): ``input`` (what reached
    it), ``output``, ``grid`` (the sampling grid, normalised ``(N, H_out, W_out, 2)``),
    ``align_corners`` and ``module``. Transformers that did not run are left out.
    """
    records: dict[tuple[int, int], dict] = {}
    hooks = []
    for i, stn in enumerate(find_transformers(model)):
        def hook(module, args, output, i=i):
            inp = args[0]
            out = output[0] if isinstance(output, tuple) else output
            params = module.parameters_of(inp)
            if isinstance(module, ParallelTransformer):
                outs = out if isinstance(out, list) else out.chunk(module.k, dim=1)
                members = module.members() or [module] * module.k
            else:
                params, outs, members = [params], [out], [module]
            for j, (p, o, m) in enumerate(zip(params, outs, members)):
                grid = m.transform.grid(p, o.shape, align_corners=m.align_corners)
                records[i, j] = {"module": module, "input": inp, "output": o, "grid": grid,
                                 "align_corners": m.align_corners}
        hooks.append(stn.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [records[i] for i in sorted(records)]


def transformer_figure(model: nn.Module, x: torch.Tensor, path, *, n: int = 10,
                       title: str = "") -> Path:
    """Inputs (sampling grid drawn over them) above outputs, for every transformer.

    ``x``: model inputs ``(N, C, H, W)`` as the model takes them; the first ``n`` are
    shown. Each spatial transformer of the model (:func:`torchstn.find_transformers`, in
    order) gets two rows: what reached it with its sampling grid, and its output (feature
    maps as their mean absolute activation). Models without a transformer show the inputs.
    """
    plt = pyplot()
    xb = x[:n]
    n = len(xb)
    records = capture_transformers(model, xb)
    rows = 2 * len(records) if records else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.6 * rows + 0.5), squeeze=False)
    if not records:
        for i in range(n):
            img, kw = _image(xb[i])
            axes[0, i].imshow(img, **kw)
        axes[0, 0].set_ylabel("input", fontsize=9)
    for k, rec in enumerate(records):
        inp, out = rec["input"], rec["output"]
        for i in range(n):
            img, kw = _image(inp[i])
            axes[2 * k, i].imshow(img, **kw)
            draw_grid(axes[2 * k, i], rec["grid"][i], inp.shape[-2:],
                      align_corners=rec["align_corners"], lines=6)
            img, kw = _image(out[i])
            axes[2 * k + 1, i].imshow(img, **kw)
        which = f"ST {k + 1} " if len(records) > 1 else "ST "
        axes[2 * k, 0].set_ylabel(f"{which}input" if len(records) > 1 else "input",
                                  fontsize=9)
        h, w = out.shape[-2:]
        axes[2 * k + 1, 0].set_ylabel(f"{which}output\n{h}x{w}", fontsize=9)
    return _finish(plt, fig, axes, path, title)


@torch.no_grad()
def save_views(path, x: torch.Tensor, seen: torch.Tensor, title: str = "") -> Path:
    """Inputs ``x`` (top row) above what a classifier sees of them, ``seen`` (bottom)."""
    plt = pyplot()
    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.3), squeeze=False)
    for i in range(n):
        for row, t in enumerate((x[i], seen[i])):
            img, kw = _image(t)
            axes[row, i].imshow(img, **kw)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("seen")
    return _finish(plt, fig, axes, path, title)


def glimpse_rectangle(box, h: int, w: int) -> tuple[float, float, float, float]:
    """A glimpse ``(x0, y0, x1, y1)`` in normalised coordinates (``align_corners=False``:
    -1 and +1 are the image's outer edges) as ``(left, top, width, height)`` in the
    coordinates of ``imshow``, where pixel ``i`` covers ``[i - 0.5, i + 0.5]``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = (x0 + 1) * w / 2 - 0.5, (y0 + 1) * h / 2 - 0.5
    return left, top, (x1 - x0) * w / 2, (y1 - y0) * h / 2


def glimpse_tracks_figure(path, x: torch.Tensor, tracks: list,
                          boxes: torch.Tensor | None = None, title: str = "") -> Path:
    """Where a glimpse transformer looked over training: each image of ``x (N, C, H, W)``
    with its glimpse after every epoch (``tracks[epoch][i]``: normalised ``(x0, y0, x1,
    y1)``), light early and dark late, the last one thick; ``boxes`` (``(N, 4)``, pixel
    edges ``(x0, y0, x1, y1)``, as :class:`~torchstn.experiments.data.needle.NeedleImages`
    gives them) the objects, dashed. Pixel ``i`` is drawn over ``[i - 0.5, i + 0.5]``."""
    plt = pyplot()
    n = len(x)
    h, w = x.shape[2], x.shape[3]
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), squeeze=False)
    cmap = plt.get_cmap("viridis")
    epochs = len(tracks)
    for i in range(n):
        ax = axes[0, i]
        img, kw = _image(x[i])
        ax.imshow(img, **kw)
        for e, frame in enumerate(tracks):
            px0, py0, pw, ph = glimpse_rectangle(frame[i], h, w)
            last = e == epochs - 1
            ax.add_patch(plt.Rectangle((px0, py0), pw, ph, fill=False,
                                       color=cmap(e / max(1, epochs - 1)),
                                       lw=2.2 if last else 0.8, alpha=1.0 if last else 0.6))
        if boxes is not None:
            bx0, by0, bx1, by1 = (float(v) - 0.5 for v in boxes[i])
            ax.add_patch(plt.Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False,
                                       color="red", lw=1.0, ls="--"))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    axes[0, 0].set_ylabel(f"epochs 1 (light) to {epochs} (dark)")
    return _finish(plt, fig, axes, path, title)


def rotation_scatter_figure(path, panels: list, title: str = "") -> Path:
    """A panel per ``(label, drawn_deg, predicted_deg)``: each test digit's transformer
    rotation against the rotation drawn for it, with the line of a transformer that
    undoes it (``-drawn``, dashed) and of one that ignores it (0, dotted)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.1), squeeze=False)
    for ax, (label, drawn, predicted) in zip(axes[0], panels):
        ax.scatter(drawn, predicted, s=3, alpha=0.5)
        lim = max([abs(v) for v in drawn] + [1.0])
        ax.plot([-lim, lim], [lim, -lim], "k--", lw=0.8, label="undone")
        ax.plot([-lim, lim], [0, 0], "k:", lw=0.8, label="ignored")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("drawn rotation (deg)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("transformer rotation (deg)")
    axes[0, 0].legend(fontsize=7)
    return _save(plt, fig, path, title)


def curves_figure(history: list[dict], path, *, title: str = "") -> Path:
    """A panel per metric of the history (``loss``, ``error``, ...): train and test."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    names = list(dict.fromkeys(k.split("_", 1)[1] for k in history[0]
                               if k.startswith(("train_", "test_"))))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, marker in (("train", "o-"), ("test", "s-")):
            key = f"{split}_{name}"
            if key in history[0]:
                ax.plot(epochs, [h[key] for h in history], marker, label=split)
        if all(h.get(f"{s}_{name}", 1) > 0 for h in history for s in ("train", "test")):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{name} (%)" if name == "error" else name)
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    return _save(plt, fig, path, title)


def save_run_figures(out, model: nn.Module, x: torch.Tensor, history: list[dict],
                     label: str = "") -> list[Path]:
    """``out/transformer.png`` (inputs ``x`` through the model) and ``out/curves.png``."""
    out = Path(out)
    last = history[-1] if history else None
    if last is not None and "test_error" in last:
        label += f" - test error {last['test_error']:.2f}% after {last['epoch']} epochs"
    paths = [transformer_figure(model, x, out / "transformer.png", title=label)]
    if history:
        paths.append(curves_figure(history, out / "curves.png", title=label))
    return paths


def colocalization_figure(images: torch.Tensor, boxes: torch.Tensor, truth: torch.Tensor,
                          tracks: list, path, *, title: str = "") -> Path:
    """Top: images with the true box (green) and the learned crop (red). Below: the
    crops of the first images over training, one row per image (``tracks``: per epoch,
    per image, a box ``(x0, y0, x1, y1)`` in pixels)."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    n = len(images)
    epochs = len(tracks)
    shown = sorted({round(e) for e in torch.linspace(0, max(epochs - 1, 0),
                                                      min(epochs, n)).tolist()})
    rows = 1 + (len(tracks[0]) if tracks else 0)
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.6 * rows + 0.5), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(images[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        for box, colour in ((truth[i], "lime"), (boxes[i], "red")):
            x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour,
                                   lw=1.2))
    axes[0, 0].set_ylabel("true / learned", fontsize=9)
    for r in range(1, rows):
        image = images[r - 1, 0].cpu().numpy()
        for c in range(n):
            ax = axes[r, c]
            if c >= len(shown):
                ax.axis("off")
                continue
            x0, y0, x1, y1 = tracks[shown[c]][r - 1]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xlim(x0 - 0.5, x1 - 0.5)
            ax.set_ylim(y1 - 0.5, y0 - 0.5)
            if r == 1:
                ax.set_title(f"epoch {shown[c] + 1}", fontsize=8)
        axes[r, 0].set_ylabel(f"image {r}\ncrop", fontsize=9)
    return _finish(plt, fig, axes, path, title)


@torch.no_grad()
def projection_figure(model: nn.Module, volumes: torch.Tensor, path, *, title: str = "") -> Path:
    """3-D MNIST: each test volume projected along depth (top) and, for a model with a
    transformer, its output projected the same way (bottom): what the classifier sees."""
    plt = pyplot()
    n = len(volumes)
    records = capture_transformers(model, volumes)
    rows = [("input\nprojected", volumes.sum(2))]
    if records:
        rows.append(("transformer\noutput", records[0]["output"].sum(2)))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.45 * n, 1.6 * len(rows) + 0.5),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for i in range(n):
            axes[r, i].imshow(images[i, 0].float().cpu().numpy(), cmap="gray")
        axes[r, 0].set_ylabel(label, fontsize=9)
    return _finish(plt, fig, axes, path, title)


_REGION_COLOURS = ("#ffb000", "#00d0ff", "#ff3080", "#60ff40")


def _outline(points: int = 16) -> torch.Tensor:
    """Points ``(4 * points, 2)`` around the normalised square [-1, 1]^2."""
    t = torch.linspace(-1, 1, points + 1, dtype=torch.float64)[:-1]
    one = torch.ones_like(t)
    return torch.cat([torch.stack([t, -one], 1), torch.stack([one, t], 1),
                      torch.stack([-t, one], 1), torch.stack([-one, -t], 1)])


@torch.no_grad()
def composed_maps(records: list[dict]) -> list[torch.Tensor]:
    """For a chain of affine transformers, the map from each one's output coordinates to
    the model's input (its own composed with every transformer's before it), ``(N, 3, 3)``
    float64 in normalised coordinates. Layers between transformers (convolutions,
    pooling) keep the normalised frame, so the maps compose."""
    maps, composed = [], None
    for rec in records:
        theta = rec["module"].parameters_of(rec["input"]).double().reshape(-1, 2, 3)
        m = torch.zeros(len(theta), 3, 3, dtype=torch.float64)
        m[:, :2] = theta
        m[:, 2, 2] = 1
        composed = m if composed is None else composed @ m
        maps.append(composed)
    return maps


def input_regions(records: list[dict]) -> list[torch.Tensor]:
    """Where each of a chain of affine transformers reads the model's input: the outline
    of its output mapped back by :func:`composed_maps`, ``(N, P, 2)`` per transformer."""
    pts = torch.cat([_outline(), torch.ones(4 * 16, 1, dtype=torch.float64)], 1)
    return [(m @ pts.T).transpose(1, 2)[..., :2] for m in composed_maps(records)]


def house_numbers_figure(model: nn.Module, x: torch.Tensor, path, *, n: int = 10,
                         title: str = "") -> Path:
    """Test numbers with the input region each transformer reads (the paper's Fig. 4:
    the four of ST-CNN Multi in four colours, composed back to the input; Single's crop),
    and below them the first transformer's output."""
    plt = pyplot()
    xb = x[:n]
    n = len(xb)
    records = capture_transformers(model, xb)
    regions = input_regions(records) if records else []
    rows = 2 if records else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.6 * rows + 0.5), squeeze=False)
    h, w = xb.shape[-2:]
    for i in range(n):
        img, kw = _image(xb[i])
        axes[0, i].imshow(img, **kw)
        for k, region in enumerate(regions):
            px = ((region[i, :, 0] + 1) * w - 1) / 2, ((region[i, :, 1] + 1) * h - 1) / 2
            axes[0, i].fill(px[0].numpy(), px[1].numpy(), fill=False, lw=1.0,
                            color=_REGION_COLOURS[k % len(_REGION_COLOURS)])
        axes[0, i].set_xlim(-0.5, w - 0.5)
        axes[0, i].set_ylim(h - 0.5, -0.5)
        if records:
            img, kw = _image(records[0]["output"][i])
            axes[1, i].imshow(img, **kw)
    axes[0, 0].set_ylabel("input" + (f", {len(regions)} ST region"
                                     f"{'s' * (len(regions) > 1)}" if regions else ""),
                          fontsize=9)
    if records:
        axes[1, 0].set_ylabel("ST 1 output", fontsize=9)
    return _finish(plt, fig, axes, path, title)
