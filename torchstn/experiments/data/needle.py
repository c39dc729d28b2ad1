"""Needle in a haystack: a small coloured object on a large photograph, among distractors.

Each image is a ``canvas x canvas`` RGB crop of a real photograph (the public-domain
photographs scikit-image ships in its package; nothing is downloaded), with:

- one object: a Fashion-MNIST item (or MNIST digit) of the split, ``object_size`` pixels
  (24 to 64 by default), rotated by up to 45 degrees, painted in a random saturated
  colour; the label is its class;
- ``distractors`` smaller pieces (a quarter of another item, 8 to 20 px), in other
  colours, pasted first (the object is never covered).

Everything is drawn from a seeded generator: the same seed gives the same images. The
object's box (``(x0, y0, x1, y1)`` in pixels) comes with each image.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "NeedleImages", "load_photos", "photo_dir"]

#: The photographs backgrounds are cut from (files of scikit-image's ``skimage/data``):
#: colour photographs, and grey textures and scenes (used as grey).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
          "motorcycle_left.png", "retina.jpg", "rocket.jpg", "brick.png", "grass.png",
          "gravel.png", "camera.png", "moon.png")


def photo_dir() -> Path:
    """scikit-image's data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the needle task cuts its backgrounds from the photographs "
                                  "scikit-image ships: pip install scikit-image")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_photos(largest: int = 768) -> list[torch.Tensor]:
    """The :data:`PHOTOS` as ``(3, H, W)`` float32 tensors in [0, 1], each reduced
    (anti-aliased) so that its shorter side is at most ``largest`` pixels."""
    from PIL import Image

    folder = photo_dir()
    photos = []
    for name in PHOTOS:
        path = folder / name
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if min(im.size) > largest:
                    f = largest / min(im.size)
                    im = im.resize((round(im.width * f), round(im.height * f)),
                                   Image.Resampling.LANCZOS)
                data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                photos.append(data.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255)
        except OSError as e:
            raise ValueError(f"cannot read background photograph {path}: {e}") from None
    return photos


def _colours(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 3)`` saturated colours: a random hue at full saturation, value 0.6 to 1."""
    hue = torch.rand(n, generator=gen) * 6
    value = 0.6 + 0.4 * torch.rand(n, generator=gen)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue[:, None]) % 6
    rgb = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb * value[:, None]


def _render(items: torch.Tensor, size: torch.Tensor, angle: torch.Tensor,
            patch: int) -> torch.Tensor:
    """Alpha ``(n, 1, patch, patch)``: each 28 x 28 item scaled to ``size`` pixels, rotated by
    ``angle`` (radians), centred (bilinear: the items are drawn at 0.3x to 2.3x, where
    a shrink to 0.3x of an item's 28 pixels leaves little to alias)."""
    n = len(items)
    scale = patch / size  # the patch spans `scale` item widths
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, patch, patch), align_corners=False)
    return F.grid_sample(items[:, None].float() / 255, grid, align_corners=False)


class NeedleImages:
    """Generator of needle images from an item set ``(N, 28, 28)`` uint8 with labels.

    Args:
        items, labels: the objects (and distractors) to draw from.
        photos: backgrounds (:func:`load_photos`).
        canvas: side of the images.
        object_size: ``(min, max)`` side of the object, pixels.
        distractors: ``(min, max)`` number of distractor pieces.
    """

    def __init__(self, items: torch.Tensor, labels: torch.Tensor, photos: list[torch.Tensor], *,
                 canvas: int = 512, object_size: tuple[int, int] = (24, 64),
                 distractors: tuple[int, int] = (4, 8)):
        if not 8 <= object_size[0] <= object_size[1] <= canvas:
            raise ValueError(f"object_size must be (min, max) with 8 <= min <= max <= canvas "
                             f"= {canvas}, got {object_size}")
        self.items, self.labels, self.photos = items, labels, photos
        self.canvas, self.object_size, self.distractors = canvas, object_size, distractors

    def _background(self, gen: torch.Generator) -> torch.Tensor:
        s = self.canvas
        photo = self.photos[int(torch.randint(len(self.photos), (1,), generator=gen))]
        h, w = photo.shape[1:]
        side = min(h, w) * (0.5 + 0.5 * float(torch.rand(1, generator=gen)))
        side = max(8, int(side))
        top = int(torch.randint(h - side + 1, (1,), generator=gen))
        left = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = photo[:, top: top + side, left: left + side][None]
        img = F.interpolate(crop, size=(s, s), mode="bilinear", antialias=side > s)[0]
        if torch.rand(1, generator=gen) < 0.5:
            img = img.flip(-1)
        contrast = 0.6 + 0.6 * float(torch.rand(1, generator=gen))
        bright = 0.2 * (float(torch.rand(1, generator=gen)) - 0.5)
        return ((img - 0.5) * contrast + 0.5 + bright).clamp(0, 1)

    def _paste(self, img, alpha, colour, x, y):
        p = alpha.shape[-1]
        region = img[:, y: y + p, x: x + p]
        img[:, y: y + p, x: x + p] = region * (1 - alpha) + colour[:, None, None] * alpha

    def make(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` images ``(n, 3, S, S)`` uint8, their labels ``(n,)`` and object boxes
        ``(n, 4)`` float ``(x0, y0, x1, y1)`` in pixels (the rotated item's square)."""
        s = self.canvas
        lo, hi = self.object_size
        images = torch.empty(n, 3, s, s, dtype=torch.uint8)
        labels = torch.empty(n, dtype=torch.long)
        boxes = torch.empty(n, 4)
        for i in range(n):
            img = self._background(gen)
            k = int(torch.randint(self.distractors[0], self.distractors[1] + 1, (1,),
                                  generator=gen))
            pick = torch.randint(len(self.items), (k + 1,), generator=gen)
            colours = _colours(k + 1, gen)
            # Distractors: a quarter of another item (a 14 x 14 window), 8 to 20 px, drawn
            # in one call; then the object, on top.
            pieces = torch.zeros(k, 28, 28, dtype=self.items.dtype)
            corners = torch.randint(0, 15, (k, 2), generator=gen).tolist()
            for j, (a, b) in enumerate(corners):
                pieces[j, a: a + 14, b: b + 14] = self.items[pick[j], a: a + 14, b: b + 14]
            sizes = 16 + 24 * torch.rand(k, generator=gen)  # the item's side: the piece's x2
            angles = (torch.rand(k, generator=gen) - 0.5) * math.pi
            patch = int(math.ceil(40 * math.sqrt(2))) + 2
            alphas = _render(pieces, sizes, angles, patch) if k else None
            spots = torch.randint(0, s - patch + 1, (k, 2), generator=gen).tolist()
            for j, (x, y) in enumerate(spots):
                self._paste(img, alphas[j], colours[j], x, y)
            size = lo + (hi - lo) * torch.rand(1, generator=gen)
            angle = (torch.rand(1, generator=gen) - 0.5) * (math.pi / 2)
            patch = int(math.ceil(float(size) * math.sqrt(2))) + 2
            alpha = _render(self.items[pick[k]][None], size, angle, patch)[0]
            x, y = torch.randint(0, s - patch + 1, (2,), generator=gen).tolist()
            self._paste(img, alpha, colours[k], x, y)
            c = patch / 2
            half = float(size) * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2
            boxes[i] = torch.tensor([x + c - half, y + c - half, x + c + half, y + c + half])
            labels[i] = self.labels[pick[k]]
            images[i] = img.mul(255).round().to(torch.uint8)
        return images, labels, boxes
