"""The paper's distorted-MNIST variants (appendix A.1), as seeded, batched tensor ops.

Every distortion is a warp by the library's own grid generators and sampler, one set of
transform parameters per image, drawn from a ``torch.Generator`` (so a seed fixes the
data on every machine). Sizes are in pixels of the 28x28 source digit.

======  ===========================================================================  =====
name    distortion                                                                   size
======  ===========================================================================  =====
none    undistorted                                                                  28
r       rotation, angle uniform in [-90, 90] degrees                                 28
rts     rotation in [-45, 45] degrees, scale in [0.7, 1.2], uniformly random          42
        position (the scaled 28x28 box stays inside the canvas)
p       scale in [0.75, 1.0], then each of the four corners moved by N(0, 5 px)       28
        (a projective warp)
e       scale in [0.75, 1.0], then a thin-plate spline whose 4x4 control points      28
        are moved by N(0, 1.5 px)
tc      the digit at a uniformly random (integer) position on a 60x60 canvas, with   60
        six 6x6 patches cropped from other random digits (pixel-wise maximum)
======  ===========================================================================  =====
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..homography import homography_from_points
from ..tps import lattice
from ..warping import warp

__all__ = ["DISTORTIONS", "distort", "output_size"]

_Distortion = Callable[[torch.Tensor, torch.Generator, torch.Tensor], tuple[torch.Tensor, dict]]
_REGISTRY: dict[str, tuple[int, _Distortion]] = {}
HALF = 14.0  # pixels per normalised unit of the 28x28 digit

# The corners of the image, where -1 and +1 are its extreme edges (align_corners=False).
_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _register(name: str, size: int):
    def add(fn: _Distortion) -> _Distortion:
        _REGISTRY[name] = (size, fn)
        return fn

    return add


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, *shape) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, dtype=torch.float64)


@_register("none", 28)
def _none(x, gen, pool):
    return x, {}


@_register("r", 28)
def _rotate(x, gen, pool):
    angle = _uniform(len(x), -math.pi / 2, math.pi / 2, gen)
    params = torch.stack([angle, torch.zeros_like(angle), torch.zeros_like(angle)], 1)
    return warp(x, params.to(x.dtype), "rotation"), {"angle": angle}


@_register("rts", 42)
def _rts(x, gen, pool):
    n = len(x)
    angle = _uniform(n, -math.pi / 4, math.pi / 4, gen)
    scale = _uniform(n, 0.7, 1.2, gen)
    # Centre offset in canvas pixels, uniform so that the scaled 28x28 box fits.
    room = (42 - 28 * scale).unsqueeze(1) / 2  # (N, 1)
    offset = _uniform(n, -1.0, 1.0, gen, 2) * room  # (N, 2)
    # Output point u (normalised over 42 px) reads the digit at (21/14)/scale R (u - c).
    zoom = 21.0 / HALF / scale
    c, s = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    centre = offset / 21.0
    tx = -(c * centre[:, 0] - s * centre[:, 1])
    ty = -(s * centre[:, 0] + c * centre[:, 1])
    params = torch.stack([angle, torch.log(zoom), tx, ty], 1)
    out = warp(x, params.to(x.dtype), "similarity", out_size=(42, 42))
    return out, {"angle": angle, "scale": scale, "offset": offset}


@_register("p", 28)
def _projective(x, gen, pool):
    n = len(x)
    scale = _uniform(n, 0.75, 1.0, gen)
    noise = torch.randn(n, 4, 2, generator=gen, dtype=torch.float64) * (5.0 / HALF)
    corners = _CORNERS.double()
    moved = scale.view(-1, 1, 1) * corners + noise  # where the digit's corners land
    h = homography_from_points(moved, corners.expand(n, 4, 2))  # output -> input
    params = h.reshape(n, 9)[:, :8]
    return warp(x, params.to(x.dtype), "projective"), {"scale": scale, "corner_noise": noise}


@_register("e", 28)
def _elastic(x, gen, pool):
    n = len(x)
    scale = _uniform(n, 0.75, 1.0, gen)
    target = lattice(4, dtype=torch.float64)
    noise = torch.randn(n, 16, 2, generator=gen, dtype=torch.float64) * (1.5 / HALF)
    # Elastic warp, then the shrink: a TPS is linear in its source points, so scaling
    # them by 1/scale composes the two exactly.
    source = (target + noise) / scale.view(-1, 1, 1)
    out = warp(x, source.reshape(n, 32).to(x.dtype), "tps")
    return out, {"scale": scale, "point_noise": noise}


def _attention(log_scale: float, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.full_like(tx, log_scale), tx, ty], 1)


@_register("tc", 60)
def _cluttered(x, gen, pool):
    n, k = len(x), 6
    # Digit: integer top-left position in [0, 32], so the sample points hit pixel centres.
    pos = torch.randint(0, 60 - 28 + 1, (n, 2), generator=gen).double()
    t = (30.0 - pos) / HALF - 1
    canvas = warp(x, _attention(math.log(30 / HALF), t[:, 0], t[:, 1]).to(x.dtype), "attention",
                  out_size=(60, 60))
    # Clutter: a 6x6 crop of a random pool digit at a random spot, pasted at a random spot.
    src = torch.randint(0, len(pool), (n * k,), generator=gen)
    crop_at = torch.randint(0, 28 - 6 + 1, (n * k, 2), generator=gen).double()
    paste_at = torch.randint(0, 60 - 6 + 1, (n * k, 2), generator=gen).double()
    digits = pool[src].unsqueeze(1).to(x.dtype) / 255
    ct = (3.0 + crop_at) / HALF - 1
    crops = warp(digits, _attention(math.log(3 / HALF), ct[:, 0], ct[:, 1]).to(x.dtype),
                 "attention", out_size=(6, 6))
    # Paste at integer positions: a pure index shift, so the crops are scattered (with a
    # pixel-wise maximum) rather than warped onto six full 60x60 canvases per image.
    offsets = torch.arange(6)
    rows = paste_at[:, 1].long().view(-1, 1, 1) + offsets.view(1, 6, 1)
    cols = paste_at[:, 0].long().view(-1, 1, 1) + offsets.view(1, 1, 6)
    where = (rows * 60 + cols).view(n, k * 36)
    clutter = torch.zeros(n, 60 * 60, dtype=x.dtype).scatter_reduce_(
        1, where, crops.reshape(n, k * 36), "amax").view(n, 1, 60, 60)
    info = {"position": pos, "clutter_source": src.view(n, k),
            "clutter_crop": crop_at.view(n, k, 2), "clutter_paste": paste_at.view(n, k, 2)}
    return torch.maximum(canvas, clutter), info


DISTORTIONS = tuple(_REGISTRY)


def output_size(name: str) -> int:
    """Side of the images a distortion produces (28, 42 or 60)."""
    _check_name(name)
    return _REGISTRY[name][0]


def _check_name(name: object) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"distortion must be one of {list(_REGISTRY)}, got {name!r}")


def distort(
    images: torch.Tensor,
    name: str,
    generator: torch.Generator,
    *,
    pool: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Distort a batch of digits.

    Args:
        images: ``(N, 28, 28)`` uint8 digits.
        name: one of :data:`DISTORTIONS`.
        generator: the source of randomness (CPU ``torch.Generator``).
        pool: ``(M, 28, 28)`` uint8 digits that ``tc`` crops its clutter from (default:
            ``images``).
        dtype: of the output.

    Returns:
        Images ``(N, 1, S, S)`` in ``[0, 1]`` (S = :func:`output_size`) and the drawn
        parameters by name (``angle`` in radians, ``scale``, ``offset`` in pixels, ...).
    """
    _check_name(name)
    if images.dtype != torch.uint8 or images.dim() != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"images must be uint8 digits of shape (N, 28, 28), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    x = images.unsqueeze(1).to(dtype) / 255
    out, info = _REGISTRY[name][1](x, generator, images if pool is None else pool)
    return out.clamp_(0, 1), info
