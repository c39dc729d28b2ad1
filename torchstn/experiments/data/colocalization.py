"""Co-localisation data (paper, appendix A.2): one digit class on 84x84 canvases."""

from __future__ import annotations

import torch

from .idx import load_idx_dataset

__all__ = ["CANVAS", "CLUTTER", "DIGIT", "box_iou", "colocalization_images"]

CANVAS, DIGIT = 84, 28
#: Clutter of the TC variant: 16 random 6x6 crops of other digits.
CLUTTER, CLUTTER_SIDE = 16, 6


def colocalization_images(digit: int, *, clutter: bool, n: int = 100, data_dir=None,
                          seed: int = 0, dataset: str = "mnist"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` MNIST test digits of class ``digit``, each pasted at a random position of an
    84x84 canvas (with ``clutter``: plus 16 random 6x6 crops of other test digits).

    Returns:
        ``images (n, 1, 84, 84)`` uint8 and ``boxes (n, 4)`` float64, the pasted digit's
        28x28 square ``(x0, y0, x1, y1)`` in pixels. The same ``seed`` gives the same bytes.
    """
    if not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int from 0 to 9, got {digit!r}")
    x, y = load_idx_dataset(dataset, "test", data_dir)
    gen = torch.Generator().manual_seed(seed * 10 + digit)
    rows = (y == digit).nonzero().flatten()
    if n > len(rows):
        raise ValueError(f"n must be at most {len(rows)} (the test digits of class {digit}), "
                         f"got {n}")
    chosen = rows[torch.randperm(len(rows), generator=gen)[:n]]
    canvas = torch.zeros(n, CANVAS, CANVAS, dtype=torch.uint8)
    at = torch.randint(0, CANVAS - DIGIT + 1, (n, 2), generator=gen)
    if clutter:
        others = (y != digit).nonzero().flatten()
        src = others[torch.randint(0, len(others), (n, CLUTTER), generator=gen)]
        crop = torch.randint(0, DIGIT - CLUTTER_SIDE + 1, (n, CLUTTER, 2), generator=gen)
        paste = torch.randint(0, CANVAS - CLUTTER_SIDE + 1, (n, CLUTTER, 2), generator=gen)
        s = CLUTTER_SIDE
        for i in range(n):
            for k in range(CLUTTER):
                (cx, cy), (px, py) = crop[i, k].tolist(), paste[i, k].tolist()
                patch = x[src[i, k], cy : cy + s, cx : cx + s]
                region = canvas[i, py : py + s, px : px + s]
                torch.maximum(region, patch, out=region)
    for i in range(n):
        px, py = at[i].tolist()
        region = canvas[i, py : py + DIGIT, px : px + DIGIT]
        torch.maximum(region, x[chosen[i]], out=region)
    boxes = torch.cat([at, at + DIGIT], 1).double()
    return canvas.unsqueeze(1), boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``(N, 4)`` ``(x0, y0, x1, y1)``, row by row."""
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)
