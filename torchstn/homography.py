"""Homographies from point correspondences (the four-corner parameterisation)."""

from __future__ import annotations

import torch

from ._checks import check_float, check_tensor, shape_str

__all__ = ["homography_from_points"]


def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homography ``H`` with ``H (src_k, 1) ~ (dst_k, 1)`` for each point ``k``.

    Direct linear transform with ``H[2, 2] = 1``: an exact solve for 4 points, least
    squares for more. Computed in float64, returned in the dtype of ``src``.

    To warp an image so that its corners move to ``q`` (output coordinates), use
    ``projective_grid(homography_from_points(q, corners), size)``: parameters map output
    points to input points.

    Args:
        src: ``(N, K, 2)`` points ``(x, y)``, K >= 4, no three of the first four collinear.
        dst: ``(N, K, 2)``.

    Returns:
        ``(N, 3, 3)``.

    Example:
        >>> sq = torch.tensor([[[-1.0, -1], [1, -1], [1, 1], [-1, 1]]])
        >>> (homography_from_points(sq, 2 * sq + 1) + 0.0).round(decimals=4)
        tensor([[[2., 0., 1.],
                 [0., 2., 1.],
                 [0., 0., 1.]]])
    """
    src, dst = check_tensor("src", src), check_tensor("dst", dst)
    check_float("src", src)
    check_float("dst", dst)
    if src.dim() != 3 or src.shape[-1] != 2 or src.shape[1] < 4 or dst.shape != src.shape:
        raise ValueError(
            "src and dst must both have shape (N, K, 2) with K >= 4, got "
            f"{shape_str(src.shape)} and {shape_str(dst.shape)}"
        )
    s, d = src.double(), dst.double()
    x, y = s[..., 0], s[..., 1]
    u, v = d[..., 0], d[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)  # (N, K, 8)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N, 2K, 8)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)  # (N, 2K, 1)
    if src.shape[1] == 4:
        h = torch.linalg.solve(a, b)
    else:
        h = torch.linalg.lstsq(a, b).solution
    h = torch.cat([h.squeeze(-1), torch.ones_like(h[:, :1, 0])], dim=1)
    return h.view(-1, 3, 3).to(src.dtype)
