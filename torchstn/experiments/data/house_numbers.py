"""Synthetic house numbers from MNIST: a multi-digit benchmark that trains on a laptop.

A number is 1 to 5 MNIST digits (length uniform) side by side: each digit's 28x28 box
scaled by U(0.85, 1.15), neighbouring centres (a + b) / 2 * U(0.55, 0.8) box widths
apart (the ink of an MNIST digit fills about 0.7 of its box, so they nearly touch), each
shifted up or down by U(-0.08, 0.08). Like an SVHN crop (:mod:`.svhn`), the union of the
digits' ink boxes (the central 20x20 of each 28x28 box, where MNIST centres its digits),
grown by 30% (tight, 64x64 canvas) or by 160% (loose, 128x128), is resized to the square
canvas, except that a number is squeezed horizontally at most 2:1. Then the whole number
is distorted about the canvas centre by a random affine map: rotation U(-15, 15)
degrees, shear U(-0.15, 0.15), scale U(0.9, 1.1), shift U(-5%, 5%) of the canvas each
way. The loose canvas also gets clutter: 6 random 10x10 pieces of other training digits,
each magnified by U(1.2, 2.4), anywhere on it (pixel-wise maximum).

Training numbers are drawn afresh every epoch from the training digits (``seed`` and the
epoch fix them); the test set is drawn once from the test digits (``test_seed``), in
float64, rounded to uint8. Labels are SVHN's: ``(N, 5)`` digits left to right, 10
(:data:`~.svhn.NO_DIGIT`) after the end; lengths ``(N,)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from torchstn.warping import warp

from .distortions import to_device
from .idx import load_idx_dataset
from .mnist import check_size, epoch_generator, shard_rows, validation_split
from .svhn import MAX_DIGITS, NO_DIGIT

__all__ = ["CANVAS", "HouseNumbers", "SVHNData", "box_share", "centre_crop", "draw_numbers",
           "random_crops", "render_numbers"]

#: Canvas side of each variant.
CANVAS = {"tight": 64, "loose": 128}
_GROW = {"tight": 1.3, "loose": 2.6}
_INK = 20 / 28  # the part of an MNIST box its digit's ink fills
_CLUTTER, _PIECE = 6, 10


def _check_variant(variant: str) -> None:
    if variant not in CANVAS:
        raise ValueError(f"variant must be one of {', '.join(CANVAS)}, got {variant!r}")


def _u(gen: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def draw_numbers(n: int, gen: torch.Generator, pool_size: int, variant: str) -> dict:
    """The random draws of ``n`` numbers (CPU tensors; they alone consume ``gen``).

    ``digits (n, 5)`` rows of the digit pool, ``lengths (n,)``, ``theta (n, 5, 6)`` the
    affine map of every digit slot (normalised canvas to normalised digit coordinates, as
    :func:`torchstn.warp` takes), ``box (n, 4)`` the number's ink box on the canvas
    (pixels ``x0, y0, x1, y1``: the axis-aligned bounds of the distorted box of its
    digits' ink), and for the loose variant the clutter's pool rows, piece offsets and
    maps.
    """
    _check_variant(variant)
    size, k = CANVAS[variant], MAX_DIGITS
    lengths = torch.randint(1, k + 1, (n,), generator=gen)
    digits = torch.randint(0, pool_size, (n, k), generator=gen)
    scale = _u(gen, 0.85, 1.15, n, k)  # box side, in units of a 28-pixel box
    gap = _u(gen, 0.55, 0.8, n, k - 1)
    lift = _u(gen, -0.08, 0.08, n, k)
    step = (scale[:, :-1] + scale[:, 1:]) / 2 * gap
    cx = torch.cat([torch.zeros(n, 1, dtype=torch.float64), step.cumsum(1)], 1)
    cy = lift
    used = torch.arange(k).unsqueeze(0) < lengths.unsqueeze(1)  # (n, k)
    half = scale * _INK / 2
    inf = torch.tensor(math.inf, dtype=torch.float64)
    x0 = torch.where(used, cx - half, inf).amin(1)
    x1 = torch.where(used, cx + half, -inf).amax(1)
    y0 = torch.where(used, cy - half, inf).amin(1)
    y1 = torch.where(used, cy + half, -inf).amax(1)
    grow = _GROW[variant]
    sx = size / (grow * (x1 - x0))  # canvas pixels per layout unit
    sy = torch.minimum(size / (grow * (y1 - y0)), 2.0 * sx)
    angle = _u(gen, -math.pi / 12, math.pi / 12, n)
    shear = _u(gen, -0.15, 0.15, n)
    zoom = _u(gen, 0.9, 1.1, n)
    shift = _u(gen, -0.05, 0.05, n, 2) * size
    # Layout l -> canvas pixel p = centre + shift + Z R S diag(sx, sy) (l - m).
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shr = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    shr[:, 0, 1] = shear
    lin = zoom[:, None, None] * rot @ shr @ torch.diag_embed(torch.stack([sx, sy], -1))
    mid = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    layout_to_canvas = _affine(lin, size / 2 + shift - (lin @ mid.unsqueeze(-1)).squeeze(-1))
    # Normalised canvas u -> pixel p = size / 2 (u + 1).
    u_to_p = _affine(torch.eye(2, dtype=torch.float64) * size / 2,
                     torch.full((2,), size / 2, dtype=torch.float64))
    u_to_layout = torch.linalg.inv(layout_to_canvas) @ u_to_p  # (n, 3, 3)
    # Layout -> digit slot j's normalised coordinates: (l - c_j) * 2 / scale_j.
    inv = 2 / scale
    to_digit = _affine(torch.diag_embed(torch.stack([inv, inv], -1)),
                       -torch.stack([cx, cy], -1) * inv.unsqueeze(-1))  # (n, k, 3, 3)
    theta = (to_digit @ u_to_layout.unsqueeze(1))[..., :2, :].reshape(n, k, 6)
    # The number's ink box on the canvas: the layout box's corners through the map, then
    # their axis-aligned bounds (pixels, x0 y0 x1 y1; drawing nothing from gen).
    corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                           torch.stack([x0, y1], -1), torch.stack([x1, y1], -1)], 1)
    on_canvas = (layout_to_canvas[:, None, :2, :2] @ corners.unsqueeze(-1)).squeeze(-1) \
        + layout_to_canvas[:, None, :2, 2]
    box = torch.cat([on_canvas.amin(1), on_canvas.amax(1)], -1)
    drawn = {"digits": digits, "lengths": lengths, "theta": theta, "box": box}
    if variant == "loose":
        c = _CLUTTER
        drawn["clutter"] = torch.randint(0, pool_size, (n, c), generator=gen)
        drawn["piece"] = torch.randint(0, 28 - _PIECE + 1, (n, c, 2), generator=gen)
        magnify = _u(gen, 1.2, 2.4, n, c)
        where = _u(gen, -1.0, 1.0, n, c, 2)
        # Canvas u -> piece coordinates: the piece spans magnify * 10 canvas pixels.
        zoom_p = size / (magnify * _PIECE)
        drawn["clutter_theta"] = torch.stack(
            [zoom_p, torch.zeros_like(zoom_p), -zoom_p * where[..., 0],
             torch.zeros_like(zoom_p), zoom_p, -zoom_p * where[..., 1]], -1)
    return drawn


def box_share(box: torch.Tensor, size: int, window: int | None = None) -> torch.Tensor:
    """``(n,)``: the share of the central ``window`` x ``window`` square of a ``size``
    canvas (default: the whole canvas) that each ink ``box`` (pixels ``x0 y0 x1 y1``, as
    :func:`draw_numbers` gives it) covers, the part outside the square left out."""
    window = size if window is None else window
    lo, hi = (size - window) / 2, (size + window) / 2
    width = (box[:, 2].clamp(lo, hi) - box[:, 0].clamp(lo, hi)).clamp_min(0)
    height = (box[:, 3].clamp(lo, hi) - box[:, 1].clamp(lo, hi)).clamp_min(0)
    return width * height / window**2


def _affine(lin: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """3x3 homogeneous matrices from ``lin (..., 2, 2)`` and ``t (..., 2)``."""
    shape = torch.broadcast_shapes(lin.shape[:-2], t.shape[:-1])
    out = torch.zeros(*shape, 3, 3, dtype=torch.float64)
    out[..., :2, :2] = lin
    out[..., :2, 2] = t
    out[..., 2, 2] = 1
    return out


def render_numbers(pool: torch.Tensor, drawn: dict, variant: str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The images ``(n, 1, S, S)`` in [0, 1] of drawn numbers; ``pool (P, 28, 28)`` uint8
    digits (on the device the images are made on)."""
    size, device = CANVAS[variant], pool.device
    digits, lengths, theta = drawn["digits"], drawn["lengths"], drawn["theta"]
    n, k = digits.shape
    src = pool[to_device(digits.reshape(-1), device)].to(dtype).div(255).unsqueeze(1)
    slots = warp(src, to_device(theta.reshape(n * k, 6).to(dtype), device), "affine",
                 out_size=(size, size)).reshape(n, k, size, size)
    used = torch.arange(k).unsqueeze(0) < lengths.unsqueeze(1)
    image = (slots * to_device(used, device).to(dtype)[:, :, None, None]).amax(1)
    if "clutter" in drawn:
        c = drawn["clutter"].shape[1]
        rows = to_device(drawn["clutter"].reshape(-1), device)
        pieces = random_crops(pool[rows].unsqueeze(1), drawn["piece"].reshape(-1, 2), _PIECE)
        pieces = pieces.to(dtype).div(255)
        spread = warp(pieces, to_device(drawn["clutter_theta"].reshape(n * c, 6).to(dtype),
                                        device), "affine", out_size=(size, size))
        image = torch.maximum(image, spread.reshape(n, c, size, size).amax(1))
    return image.unsqueeze(1)


def number_labels(digit_labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(n, 5)`` labels: the digits of each number, then :data:`NO_DIGIT`."""
    used = torch.arange(digit_labels.shape[1], device=lengths.device) < lengths.unsqueeze(1)
    return torch.where(used, digit_labels, torch.full_like(digit_labels, NO_DIGIT))


class HouseNumbers:
    """Synthetic house numbers (``variant`` ``tight`` 64x64 or ``loose`` 128x128).

    ``train_size``: numbers per training epoch (default 60000), made from the training
    digits (the first ``train_digits``, default all; with ``val_size`` the digits left
    after the validation digits are held out). ``test_size``: test numbers (default
    10000), made once from the test digits, or from the validation digits with
    ``val_size``. Batches are ``(x (B, 1, S, S) float32, labels (B, 5))``; the test set is
    ``(x uint8, labels)``.
    """

    def __init__(self, variant: str = "tight", *, data_dir=None, train_size: int | None = None,
                 test_size: int | None = None, train_digits: int | None = None,
                 val_size: int = 0, seed: int = 0, test_seed: int = 2015,
                 device: str | torch.device = "cpu"):
        _check_variant(variant)
        for name, value in (("train_size", train_size), ("test_size", test_size)):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self.variant, self.size = variant, CANVAS[variant]
        self.seed, self.test_seed, self.device = seed, test_seed, torch.device(device)
        self.train_size = train_size or 60000
        self.test_size = test_size or 10000
        train_x, train_y = load_idx_dataset("mnist", "train", data_dir)
        if val_size:
            if not 0 < val_size < len(train_x):
                raise ValueError(f"val_size must be between 1 and {len(train_x) - 1} (the "
                                 f"training digits of mnist), got {val_size}")
            rows, val_rows = validation_split(len(train_x), val_size)
            test_x, test_y = train_x[val_rows], train_y[val_rows]
            train_x, train_y = train_x[rows], train_y[rows]
        else:
            test_x, test_y = load_idx_dataset("mnist", "test", data_dir)
        check_size("train_digits", train_digits, len(train_x), "the training digits")
        self.train_x = train_x[:train_digits].to(self.device)
        self.train_y = train_y[:train_digits].to(self.device)
        self.test_x, self.test_y = test_x, test_y
        self._test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0, world: int = 1,
                      crop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``train_size`` numbers of ``epoch`` in batches (this rank's shard of each),
        each cut to a random ``crop x crop`` window if ``crop`` is given."""
        gen = epoch_generator(self.seed, epoch)
        for start in range(0, self.train_size, batch_size):
            m = min(batch_size, self.train_size - start)
            drawn = draw_numbers(m, gen, len(self.train_x), self.variant)
            if crop is not None:
                drawn["crop"] = torch.randint(0, self.size - crop + 1, (m, 2), generator=gen)
            if world > 1:
                rows = shard_rows(m, rank, world)
                drawn = {key: value[rows] for key, value in drawn.items()}
            x = render_numbers(self.train_x, drawn, self.variant)
            if crop is not None:
                x = random_crops(x, drawn["crop"], crop)
            digits = self.train_y[to_device(drawn["digits"], self.device)]
            yield x, number_labels(digits, to_device(drawn["lengths"], self.device))

    def test_set(self, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed test numbers: ``(x (N, 1, S, S) uint8, labels (N, 5))`` on the CPU."""
        if self._test is None:
            gen = torch.Generator().manual_seed(self.test_seed)
            images, labels = [], []
            for start in range(0, self.test_size, chunk):
                m = min(chunk, self.test_size - start)
                drawn = draw_numbers(m, gen, len(self.test_x), self.variant)
                x = render_numbers(self.test_x, drawn, self.variant, dtype=torch.float64)
                images.append(x.mul(255).round().to(torch.uint8))
                labels.append(number_labels(self.test_y[drawn["digits"]], drawn["lengths"]))
            self._test = torch.cat(images), torch.cat(labels)
        return self._test


def random_crops(x: torch.Tensor, offsets: torch.Tensor, crop: int) -> torch.Tensor:
    """Window ``crop x crop`` of each image of ``x (N, C, S, S)`` at ``offsets (N, 2)``
    (column, row of its top-left pixel)."""
    ar = torch.arange(crop, device=x.device)
    off = to_device(offsets, x.device)
    rows = (off[:, 1:2] + ar).unsqueeze(2)  # (N, crop, 1)
    cols = (off[:, 0:1] + ar).unsqueeze(1)  # (N, 1, crop)
    n = torch.arange(len(x), device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[n, rows, cols].permute(0, 3, 1, 2).contiguous()


def centre_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """The central ``crop x crop`` window of ``x (N, C, S, S)`` (what a test image shows)."""
    top = (x.shape[-1] - crop) // 2
    return x[..., top : top + crop, top : top + crop]


class SVHNData:
    """Real SVHN house numbers (format 1, :func:`.svhn.load_svhn_numbers`) for training.

    ``size`` 64 or 128. Training numbers: the ``train`` split (with ``extra``, also the
    ``extra`` split, as Goodfellow et al. and the paper train), less ``val_size`` numbers
    held out (fixed, seeded) to score instead of the test split; ``train_size``/
    ``test_size`` keep the first N. Batches as :class:`HouseNumbers` gives them, in 3
    channels.
    """

    def __init__(self, size: int = 64, *, data_dir=None, extra: bool = False,
                 train_size: int | None = None, test_size: int | None = None,
                 val_size: int = 0, seed: int = 0, device: str | torch.device = "cpu"):
        from .svhn import load_svhn_numbers

        self.size, self.seed, self.device = size, seed, torch.device(device)
        parts = [load_svhn_numbers("train", size, data_dir)]
        if extra:
            parts.append(load_svhn_numbers("extra", size, data_dir))
        images = torch.cat([p.images for p in parts])
        labels = torch.cat([p.labels for p in parts])
        self.dropped = sum(p.dropped for p in parts)
        if val_size:
            if not 0 < val_size < len(images):
                raise ValueError(f"val_size must be between 1 and {len(images) - 1} (the "
                                 f"training numbers), got {val_size}")
            rows, val_rows = validation_split(len(images), val_size)
            self.test_x, self.test_y = images[val_rows], labels[val_rows]
            images, labels = images[rows], labels[rows]
        else:
            test = load_svhn_numbers("test", size, data_dir)
            self.test_x, self.test_y = test.images, test.labels
            self.dropped += test.dropped
        check_size("train_size", train_size, len(images), "the training numbers")
        check_size("test_size", test_size, len(self.test_x), "the test numbers")
        self.train_x = images[:train_size].to(self.device)
        self.train_y = labels[:train_size].to(self.device)
        self.test_x, self.test_y = self.test_x[:test_size], self.test_y[:test_size]

    @property
    def train_size(self) -> int:
        """Training numbers per epoch."""
        return len(self.train_x)

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0, world: int = 1,
                      crop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.train_x), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            offsets = None if crop is None else torch.randint(
                0, self.size - crop + 1, (len(idx), 2), generator=gen)
            if world > 1:
                rows = shard_rows(len(idx), rank, world)
                idx = idx[rows]
                offsets = None if offsets is None else offsets[rows]
            idx = to_device(idx, self.device)
            x = self.train_x[idx].float().div(255)
            if crop is not None:
                x = random_crops(x, offsets, crop)
            yield x, self.train_y[idx]

    def test_set(self, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test_x, self.test_y
