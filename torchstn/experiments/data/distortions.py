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
r15     rotation in [-15, 15] degrees (a narrow ``r``, for training only on a part   28
        of the test range)
rts15   rotation in [-15, 15] degrees, scale in [0.9, 1.1], position within a third  42
        of ``rts``'s room each way (a narrow ``rts``)
======  ===========================================================================  =====

Every distortion draws its parameters before warping; the drawn parameters (``angle`` in
radians, ``scale``, ``offset`` in pixels, ...) come back with the images, and
:func:`distort` can apply parameters drawn earlier (a training set distorted once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchstn._registry import Registry
from torchstn.homography import homography_from_points
from torchstn.tps import lattice
from torchstn.warping import warp

__all__ = ["DISTORTIONS", "Distortion", "check_train_distortion", "distort", "output_size"]

HALF = 14.0  # pixels per normalised unit of the 28x28 digit

# The corners of the image, where -1 and +1 are its extreme edges (align_corners=False).
_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])

Drawn = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Distortion:
    """A distortion in two steps, so that a shard of a batch can be made alone.

    ``draw(n, generator, pool_size)`` draws the parameters of ``n`` images (CPU float64 or
    int64 tensors, first dimension ``n``; the draws alone consume the generator);
    ``apply(x, drawn, pool)`` warps images ``x (n, 1, 28, 28)`` in ``[0, 1]``, on any
    device, by those parameters (``pool``: uint8 digits that clutter is cropped from).
    """

    size: int
    draw: Callable[[int, torch.Generator, int], Drawn]
    apply: Callable[[torch.Tensor, Drawn, torch.Tensor], torch.Tensor]


DISTORTIONS: Registry[Distortion] = Registry("distortion")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, *shape) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, dtype=torch.float64)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor copied to ``device`` without making the host wait for the device.

    A copy from ordinary (pageable) host memory to a GPU waits for the work queued before
    it; from pinned memory with ``non_blocking`` it is queued like a kernel, so making a
    batch on the GPU never stalls the host.
    """
    if device.type == "cpu" or t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _on(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Parameters drawn on the CPU, in the dtype and on the device of the images."""
    return to_device(params.to(x.dtype), x.device)


DISTORTIONS.add("none", Distortion(28, lambda n, gen, pool_size: {},
                                   lambda x, drawn, pool: x))


def _rotations(max_angle: float):
    """The draw of a rotation uniform in ``[-max_angle, max_angle]`` (radians)."""
    def draw(n, gen, pool_size):
        return {"angle": _uniform(n, -max_angle, max_angle, gen)}
    return draw


def _apply_r(x, drawn, pool):
    angle = drawn["angle"]
    params = torch.stack([angle, torch.zeros_like(angle), torch.zeros_like(angle)], 1)
    return warp(x, _on(params, x), "rotation")


DISTORTIONS.add("r", Distortion(28, _rotations(math.pi / 2), _apply_r))


def _rts(max_angle: float, scale_lo: float, scale_hi: float, room_parts: int):
    """The draw of an RTS distortion: rotation within ``max_angle`` (radians), scale in
    ``[scale_lo, scale_hi]``, the centre within ``1 / room_parts`` of the room that keeps
    the scaled 28x28 box inside the 42x42 canvas (division by 1 is exact: ``rts`` draws
    what it drew before)."""
    def draw(n, gen, pool_size):
        angle = _uniform(n, -max_angle, max_angle, gen)
        scale = _uniform(n, scale_lo, scale_hi, gen)
        # Centre offset in canvas pixels, uniform so that the scaled 28x28 box fits.
        room = (42 - 28 * scale).unsqueeze(1) / 2  # (N, 1)
        offset = _uniform(n, -1.0, 1.0, gen, 2) * room / room_parts  # (N, 2)
        return {"angle": angle, "scale": scale, "offset": offset}
    return draw


def _apply_rts(x, drawn, pool):
    angle, scale, offset = drawn["angle"], drawn["scale"], drawn["offset"]
    # Output point u (normalised over 42 px) reads the digit at (21/14)/scale R (u - c).
    zoom = 21.0 / HALF / scale
    c, s = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    centre = offset / 21.0
    tx = -(c * centre[:, 0] - s * centre[:, 1])
    ty = -(s * centre[:, 0] + c * centre[:, 1])
    params = torch.stack([angle, torch.log(zoom), tx, ty], 1)
    return warp(x, _on(params, x), "similarity", out_size=(42, 42))


DISTORTIONS.add("rts", Distortion(42, _rts(math.pi / 4, 0.7, 1.2, 1), _apply_rts))
DISTORTIONS.add("rts15", Distortion(42, _rts(math.pi / 12, 0.9, 1.1, 3), _apply_rts))
DISTORTIONS.add("r15", Distortion(28, _rotations(math.pi / 12), _apply_r))


def _draw_p(n, gen, pool_size):
    scale = _uniform(n, 0.75, 1.0, gen)
    noise = torch.randn(n, 4, 2, generator=gen, dtype=torch.float64) * (5.0 / HALF)
    return {"scale": scale, "corner_noise": noise}


def _apply_p(x, drawn, pool):
    scale, noise = drawn["scale"], drawn["corner_noise"]
    n = len(scale)
    corners = _CORNERS.double()
    moved = scale.view(-1, 1, 1) * corners + noise  # where the digit's corners land
    h = homography_from_points(moved, corners.expand(n, 4, 2))  # output -> input
    params = h.reshape(n, 9)[:, :8]
    return warp(x, _on(params, x), "projective")


DISTORTIONS.add("p", Distortion(28, _draw_p, _apply_p))


def _draw_e(n, gen, pool_size):
    scale = _uniform(n, 0.75, 1.0, gen)
    noise = torch.randn(n, 16, 2, generator=gen, dtype=torch.float64) * (1.5 / HALF)
    return {"scale": scale, "point_noise": noise}


def _apply_e(x, drawn, pool):
    scale, noise = drawn["scale"], drawn["point_noise"]
    n = len(scale)
    target = lattice(4, dtype=torch.float64)
    # Elastic warp, then the shrink: a TPS is linear in its source points, so scaling
    # them by 1/scale composes the two exactly.
    source = (target + noise) / scale.view(-1, 1, 1)
    return warp(x, _on(source.reshape(n, 32), x), "tps")


DISTORTIONS.add("e", Distortion(28, _draw_e, _apply_e))


def _attention(log_scale: float, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.full_like(tx, log_scale), tx, ty], 1)


_CLUTTER = 6  # 6x6 patches per tc image


def _draw_tc(n, gen, pool_size):
    k = _CLUTTER
    # Digit: integer top-left position in [0, 32], so the sample points hit pixel centres.
    pos = torch.randint(0, 60 - 28 + 1, (n, 2), generator=gen).double()
    # Clutter: a 6x6 crop of a random pool digit at a random spot, pasted at a random spot.
    src = torch.randint(0, pool_size, (n * k,), generator=gen)
    crop_at = torch.randint(0, 28 - 6 + 1, (n * k, 2), generator=gen).double()
    paste_at = torch.randint(0, 60 - 6 + 1, (n * k, 2), generator=gen).double()
    return {"position": pos, "clutter_source": src.view(n, k),
            "clutter_crop": crop_at.view(n, k, 2), "clutter_paste": paste_at.view(n, k, 2)}


def _apply_tc(x, drawn, pool):
    n, k = len(x), _CLUTTER
    pos = drawn["position"]
    src = drawn["clutter_source"].reshape(n * k)
    crop_at = drawn["clutter_crop"].reshape(n * k, 2)
    paste_at = drawn["clutter_paste"].reshape(n * k, 2)
    t = (30.0 - pos) / HALF - 1
    canvas = warp(x, _on(_attention(math.log(30 / HALF), t[:, 0], t[:, 1]), x), "attention",
                  out_size=(60, 60))
    digits = pool[to_device(src, pool.device)].unsqueeze(1)
    digits = digits.to(device=x.device, dtype=x.dtype) / 255
    ct = (3.0 + crop_at) / HALF - 1
    crops = warp(digits, _on(_attention(math.log(3 / HALF), ct[:, 0], ct[:, 1]), x),
                 "attention", out_size=(6, 6))
    # Paste at integer positions: a pure index shift, so the crops are scattered (with a
    # pixel-wise maximum) rather than warped onto six full 60x60 canvases per image.
    offsets = torch.arange(6)
    rows = paste_at[:, 1].long().view(-1, 1, 1) + offsets.view(1, 6, 1)
    cols = paste_at[:, 0].long().view(-1, 1, 1) + offsets.view(1, 1, 6)
    where = to_device((rows * 60 + cols).view(n, k * 36), x.device)
    clutter = torch.zeros(n, 60 * 60, dtype=x.dtype, device=x.device).scatter_reduce_(
        1, where, crops.reshape(n, k * 36), "amax").view(n, 1, 60, 60)
    return torch.maximum(canvas, clutter)


DISTORTIONS.add("tc", Distortion(60, _draw_tc, _apply_tc))


def output_size(name: str) -> int:
    """Side of the images a distortion produces (28, 42 or 60)."""
    return DISTORTIONS.get(name).size


def check_train_distortion(name: str, train: str | None, test: str) -> None:
    """A one-line error (naming the option ``name``) unless distortion ``train`` (None:
    the test one) makes images of the size ``test`` makes."""
    if train is not None and output_size(train) != output_size(test):
        raise ValueError(f"{name} must make images of the test distortion's size "
                         f"({test}: {output_size(test)} px), got {train} "
                         f"({output_size(train)} px)")


def distort(
    images: torch.Tensor,
    name: str,
    generator: torch.Generator,
    *,
    pool: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    rows: slice | None = None,
    drawn: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Distort a batch of digits.

    Args:
        images: ``(N, 28, 28)`` uint8 digits, on any device (the warps run there).
        name: one of :data:`DISTORTIONS`.
        generator: the source of randomness (CPU ``torch.Generator``); the parameters of
            all ``N`` images are drawn from it, whatever ``rows``.
        pool: ``(M, 28, 28)`` uint8 digits that ``tc`` crops its clutter from (default:
            ``images``).
        dtype: of the output.
        rows: distort only these images of the batch (a shard: the other images' draws
            still consume the generator, so every shard sees the same stream).
        drawn: apply these parameters (of all ``N`` images, as this function returned
            them for the same distortion) instead of drawing new ones; ``generator`` is
            then not used (may be None).

    Returns:
        Images ``(N, 1, S, S)`` in ``[0, 1]`` (S = :func:`output_size`; only ``rows`` of
        them if given) and the drawn parameters of all ``N`` images by name (``angle`` in
        radians, ``scale``, ``offset`` in pixels, ...).
    """
    spec = DISTORTIONS.get(name)
    if images.dtype != torch.uint8 or images.dim() != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"images must be uint8 digits of shape (N, 28, 28), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    pool = images if pool is None else pool
    if drawn is None:
        info = spec.draw(len(images), generator, len(pool))
    else:
        info = drawn
        wrong = [k for k, v in info.items() if len(v) != len(images)]
        if wrong:
            raise ValueError(f"drawn[{wrong[0]!r}] holds {len(info[wrong[0]])} images' "
                             f"parameters, for {len(images)} images")
    drawn = info if rows is None else {k: v[rows] for k, v in info.items()}
    chosen = images if rows is None else images[rows]
    x = chosen.unsqueeze(1).to(dtype) / 255
    return spec.apply(x, drawn, pool).clamp_(0, 1), info
