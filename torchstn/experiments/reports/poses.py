"""What a transformer learned, as a pose: the rotation and scale of its map, per image,
against the distortion that made the image (the augmentation study, issue 30).

A distortion warps the digit by a map of rotation ``angle`` (output to input points, as
every warp here): the distorted image at ``u`` is the digit at ``R(angle) u``. A
transformer of rotation ``b`` then shows the digit at ``R(angle) R(b) v``: it undoes the
distortion where ``b = -angle``, and leaves ``angle + b`` on the digit (tested with the
library's warps). :func:`matrix_pose` reads the rotation and scale of the closest
similarity of each map's 2x2 part; :func:`undo_statistics` compares the rotations with
the drawn angles.
"""

from __future__ import annotations

import math

import torch

__all__ = ["matrix_pose", "undo_statistics"]


def matrix_pose(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation (radians, in ``(-pi, pi]``) and scale of the similarity closest to the
    2x2 part ``A`` of each ``(N, 3, 3)`` (or ``(N, 2, 3)``) matrix: ``A = s R(angle)`` for
    a similarity; in general the angle of ``A + cof(A)`` (its rotation in the Frobenius
    sense) and ``sqrt(|det A|)``."""
    if matrix.dim() != 3 or matrix.shape[1] not in (2, 3) or matrix.shape[2] != 3:
        raise ValueError(f"matrix must be (N, 3, 3) or (N, 2, 3), got {tuple(matrix.shape)}")
    a = matrix[:, :2, :2].double()
    angle = torch.atan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1])
    scale = torch.linalg.det(a).abs().sqrt()
    return angle, scale


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles to ``(-pi, pi]``."""
    return angle - 2 * math.pi * torch.ceil((angle - math.pi) / (2 * math.pi))


def undo_statistics(predicted: torch.Tensor, drawn: torch.Tensor) -> dict[str, float]:
    """How far the transformers' rotations ``predicted`` undo the drawn ones ``drawn``
    (radians, ``(N,)`` each): the Pearson correlation of ``predicted`` with ``-drawn``,
    the slope of the least-squares line ``predicted ~ -drawn`` (1 where the transformer
    undoes the whole rotation, 0 where it ignores it), and the rotation left on the digit,
    ``drawn + predicted`` wrapped to +-180 degrees (median and 90th percentile of its
    size)."""
    if predicted.shape != drawn.shape or predicted.dim() != 1 or len(drawn) < 2:
        raise ValueError(f"predicted and drawn must be angles of the same N >= 2 images, "
                         f"got shapes {tuple(predicted.shape)} and {tuple(drawn.shape)}")
    p, d = predicted.double(), -drawn.double()  # d: the rotation that undoes the drawn one
    pc, dc = p - p.mean(), d - d.mean()
    var = (dc * dc).sum()
    corr = (pc * dc).sum() / ((pc * pc).sum() * var).sqrt().clamp_min(1e-300)
    residual = torch.rad2deg(_wrap(p - d)).abs()
    return {"correlation": float(corr), "slope": float((pc * dc).sum() / var.clamp_min(1e-300)),
            "residual_median_deg": float(residual.median()),
            "residual_p90_deg": float(torch.quantile(residual, 0.9))}
