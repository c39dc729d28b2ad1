"""3-D MNIST (paper, appendix A.3): a digit extruded to a slab, placed and rotated at random
in a cubic volume."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .distortions import to_device
from .mnist import DistortedMNIST, epoch_generator, shard_rows

__all__ = ["SLAB", "Mnist3D", "draw_poses", "render_volumes"]

#: Thickness of the slab, in voxels.
SLAB = 4
#: Rotation about each axis: uniform in [-MAX_ANGLE, MAX_ANGLE] radians.
MAX_ANGLE = math.pi / 4
#: Translation along each axis: uniform in [-MAX_SHIFT, MAX_SHIFT] voxels (of 60).
MAX_SHIFT = 8


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` ``Rz @ Ry @ Rx`` of angles ``(N, 3)`` (x, y, z)."""
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1)
    return rz.view(-1, 3, 3) @ ry.view(-1, 3, 3) @ rx.view(-1, 3, 3)


def draw_poses(n: int, gen: torch.Generator, size: int = 60) -> torch.Tensor:
    """Random poses ``(n, 3, 4)`` in normalised coordinates ``(x, y, z)``, float64: each maps
    a point of the volume to the point of the upright, centred slab it shows (the
    ``affine3d`` convention: output to input)."""
    angles = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * MAX_ANGLE
    shift = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * MAX_SHIFT
    r = _rotation(angles)
    t = shift * 2 / size
    # Volume point p shows slab point R^T (p - t).
    inv = r.transpose(1, 2)
    return torch.cat([inv, -(inv @ t[:, :, None])], 2)


def render_volumes(digits: torch.Tensor, poses: torch.Tensor, size: int = 60,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Volumes ``(N, 1, size, size, size)`` in ``[0, 1]`` of 28x28 uint8 ``digits`` as slabs.

    The upright slab is the digit, at 28/size of the volume's side, centred, extruded over
    :data:`SLAB` voxels of depth. Each volume shows it under its pose: a voxel at ``p``
    takes the slab's value at ``pose @ (p, 1)``, the digit sampled bilinearly (zero outside
    it) times the slab's depth profile (1 inside, linear over one voxel at its faces). This
    equals ``warp(slab volume, pose, "affine3d")`` with trilinear sampling up to the
    depth profile's interpolation (tested), without building the slab volumes.
    """
    n = len(digits)
    out = torch.zeros(n, 1, size, size, size, dtype=dtype, device=digits.device)
    # A voxel shows the slab only within SLAB / 2 + 1/2 voxels of its middle plane (a few
    # percent of the volume): its source point is computed, in float64, for those alone.
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        _render_into(out[start:stop], digits[start:stop], poses[start:stop], size)
    return out


#: Volumes rendered together by :func:`render_volumes` (bounds its float64 scratch memory).
_CHUNK = 16


def _render_into(out: torch.Tensor, digits: torch.Tensor, poses: torch.Tensor,
                 size: int) -> None:
    dev, dtype = digits.device, out.dtype
    axis = (torch.arange(size, dtype=torch.float64, device=dev) * 2 + 1) / size - 1
    pose = poses.to(dev, torch.float64)  # (n, 3, 4): source = pose @ (x, y, z, 1)
    # Each source coordinate is a sum of one term per axis: (n, 3, size) each.
    along_x = pose[:, :, 0, None] * axis
    along_y = pose[:, :, 1, None] * axis
    along_z = pose[:, :, 2, None] * axis + pose[:, :, 3, None]

    def coordinate(c: int, b, k, j, i):
        return along_z[b, c, k] + along_y[b, c, j] + along_x[b, c, i]

    depth = (along_z[:, 2, :, None, None] + along_y[:, 2, None, :, None]
             + along_x[:, 2, None, None, :]) * (size / 2)  # voxels from the middle plane
    b, k, j, i = torch.nonzero(depth.abs() < SLAB / 2 + 0.5, as_tuple=True)
    profile = (SLAB / 2 + 0.5 - depth[b, k, j, i].abs()).clamp(0, 1)
    # The digit spans 28/size of the side; bilinear in its pixels (align_corners=False),
    # zero outside it.
    px = ((coordinate(0, b, k, j, i) * (size / 28) + 1) * 28 - 1) / 2
    py = ((coordinate(1, b, k, j, i) * (size / 28) + 1) * 28 - 1) / 2
    x0, y0 = px.floor(), py.floor()
    fx, fy = (px - x0).to(dtype), (py - y0).to(dtype)
    x0, y0 = x0.long(), y0.long()
    image = digits.to(dtype) / 255
    plane = torch.zeros(len(b), dtype=dtype, device=dev)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            inside = (xx >= 0) & (xx < 28) & (yy >= 0) & (yy < 28)
            value = image[b, yy.clamp(0, 27), xx.clamp(0, 27)]
            plane += torch.where(inside, value, 0) * (wx * wy)
    out[b, 0, k, j, i] = plane * profile.to(dtype)


class Mnist3D(DistortedMNIST):
    """MNIST digits as slabs in ``size**3`` volumes, each under a random pose (A.3).

    Training volumes are posed afresh every epoch from ``(seed, epoch)``; the test volumes
    once from ``test_seed``, rendered in float64 and rounded to uint8. Other arguments as
    for :class:`~torchstn.experiments.data.mnist.DistortedMNIST`.
    """

    def __init__(self, dataset: str = "mnist", *, size: int = 60, **kwargs):
        super().__init__(dataset, "none", **kwargs)
        self.size = size

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[tuple[torch.Tensor, ...]]:
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.train_x), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            poses = draw_poses(len(idx), gen, self.size)
            if world > 1:
                rows = shard_rows(len(idx), rank, world)
                idx, poses = idx[rows], poses[rows]
            idx = to_device(idx, self.train_x.device)
            poses = to_device(poses, self.train_x.device)
            yield render_volumes(self.train_x[idx], poses, self.size), self.train_y[idx]

    def test_set(self, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            gen = torch.Generator().manual_seed(self.test_seed)
            parts = []
            for start in range(0, len(self.test_x), chunk):
                digits = self.test_x[start : start + chunk]
                poses = draw_poses(len(digits), gen, self.size)
                v = render_volumes(digits, poses, self.size, dtype=torch.float64)
                parts.append(v.mul(255).round().to(torch.uint8))
            self._test = torch.cat(parts), self.test_y
        return self._test
