"""Sampling-grid generators for matrix transforms.

Convention: grids hold normalised coordinates ``(x, y)`` (``(x, y, z)`` in 3-D), with
``-1`` and ``+1`` at the image's extreme edges (``align_corners=False``) or at the
centres of its extreme pixels (``align_corners=True``), exactly as in
:func:`torch.nn.functional.grid_sample`. A grid has shape ``(N, H, W, 2)`` (or
``(N, D, H, W, 3)``) and entry ``grid[n, i, j]`` is the INPUT location that OUTPUT pixel
``(i, j)`` reads: transform parameters always map output (target) coordinates to input
(source) coordinates, which is the direction the sampler needs (paper, Eq. 1).
"""

from __future__ import annotations

import torch

from ._checks import check_batch, check_float, check_shape, check_size, check_tensor, shape_str

__all__ = ["FAR", "affine_grid", "identity_grid", "projective_grid"]

#: Normalised coordinate given to points that a projective transform sends to or beyond
#: infinity (and the bound every projective coordinate is clamped to). It lies far
#: outside every image, so such points are sampled as padding, and it is small enough to
#: stay exact in float16 and to keep pixel indices far from integer overflow.
FAR = 1.0e4


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Grids are computed in float32 at least: half-precision coordinates are off by pixels."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _coords(n: int, align_corners: bool, dtype: torch.dtype, device) -> torch.Tensor:
    """The ``n`` normalised pixel-centre coordinates along one axis."""
    if align_corners:
        # A single pixel sits at the centre, 0, under both conventions (as in PyTorch).
        if n == 1:
            return torch.zeros(1, dtype=dtype, device=device)
        return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
    return (torch.arange(n, dtype=dtype, device=device) * 2 + 1) / n - 1


def homogeneous_grid(spatial, *, align_corners: bool, dtype: torch.dtype, device) -> torch.Tensor:
    """Homogeneous output coordinates ``(P, d + 1)``, rows ``(x, y[, z], 1)``, P = prod(spatial).

    ``spatial`` is ``(H, W)`` or ``(D, H, W)``; x varies fastest, as in a row-major image.
    """
    axes = [_coords(n, align_corners, dtype, device) for n in reversed(spatial)]  # x, y[, z]
    mesh = torch.meshgrid(*reversed(axes), indexing="ij")  # each (*spatial), order [z,] y, x
    cols = [m.reshape(-1) for m in reversed(mesh)]  # x, y[, z]
    cols.append(torch.ones_like(cols[0]))
    return torch.stack(cols, dim=1)


def identity_grid(
    size, *, align_corners: bool = False, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """The grid of the identity transform for a full size ``(N, C, H, W)`` or ``(N, C, D, H, W)``.

    Returns:
        ``(N, H, W, 2)`` or ``(N, D, H, W, 3)``: sampling with it returns the input unchanged.

    Example:
        >>> identity_grid((1, 1, 1, 2))[0, 0]
        tensor([[-0.5000,  0.0000],
                [ 0.5000,  0.0000]])
    """
    size = check_size("size", size, (4, 5))
    spatial = size[2:]
    base = homogeneous_grid(spatial, align_corners=align_corners, dtype=dtype, device=device)
    grid = base[:, :-1].reshape(*spatial, len(spatial))
    return grid.unsqueeze(0).expand(size[0], *grid.shape).contiguous()


def affine_grid(theta: torch.Tensor, size, *, align_corners: bool = False) -> torch.Tensor:
    """Sampling grid of a batch of affine matrices; same result as ``F.affine_grid``.

    Convention: ``theta`` maps normalised output coordinates ``(x, y, 1)`` to normalised
    input coordinates (paper, Eq. 1): ``grid[n, i, j] = theta[n] @ (x_j, y_i, 1)``.

    Args:
        theta: ``(N, 2, 3)`` for a 4-D ``size``, ``(N, 3, 4)`` for a 5-D ``size``.
        size: the OUTPUT size ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        align_corners: as in :func:`torch.nn.functional.grid_sample`.

    Returns:
        ``(N, H, W, 2)`` or ``(N, D, H, W, 3)``, dtype of ``theta``.

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
        >>> affine_grid(theta, (1, 1, 1, 2))[0, 0]
        tensor([[0., 0.],
                [1., 0.]])
    """
    theta = check_tensor("theta", theta)
    size = check_size("size", size, (4, 5))
    check_float("theta", theta)
    d = len(size) - 2
    form = "(N, 2, 3)" if d == 2 else "(N, 3, 4)"
    if theta.dim() != 3 or theta.shape[1:] != (d, d + 1):
        raise ValueError(
            f"theta must have shape {form} for a {len(size)}-D size, got {shape_str(theta.shape)}"
        )
    check_batch("theta", theta, size[0], "size")
    return _affine_grid(theta, size[2:], align_corners)


def _affine_grid(theta: torch.Tensor, spatial, align_corners: bool) -> torch.Tensor:
    dtype = compute_dtype(theta.dtype)
    base = homogeneous_grid(spatial, align_corners=align_corners, dtype=dtype, device=theta.device)
    grid = torch.matmul(base, theta.to(dtype).transpose(1, 2))  # (N, P, d)
    return grid.reshape(theta.shape[0], *spatial, len(spatial)).to(theta.dtype)


def projective_grid(matrix: torch.Tensor, size, *, align_corners: bool = False) -> torch.Tensor:
    """Sampling grid of a batch of 3x3 homographies.

    Convention: ``(u, v, w) = matrix[n] @ (x, y, 1)`` for each normalised output point,
    and the input location is ``(u / w, v / w)``. The homography is defined up to a
    POSITIVE scale (scaling ``matrix`` by ``c > 0`` gives the same grid); ``w > 0`` means
    the point is in front of the camera.

    Points with ``w <= eps * (|m20| + |m21| + |m22|)`` (at or behind infinity;
    ``eps = 16 * finfo(dtype).eps``) get the coordinate ``(FAR, FAR)`` with
    ``FAR = 1e4``, far outside the image, so the sampler reads padding there; every other
    coordinate is clamped to ``[-FAR, FAR]``. The grid and its gradient are therefore
    always finite for finite ``matrix`` (zero gradient at such points). A matrix with a
    non-finite entry gives NaN for every point of its image.

    Args:
        matrix: ``(N, 3, 3)``.
        size: the OUTPUT size ``(N, C, H, W)``.
        align_corners: as in :func:`torch.nn.functional.grid_sample`.

    Returns:
        ``(N, H, W, 2)``, dtype of ``matrix``.

    Example:
        >>> m = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])
        >>> projective_grid(m, (1, 1, 1, 2))[0, 0]
        tensor([[-0.5000,  0.0000],
                [ 0.5000,  0.0000]])
    """
    matrix = check_tensor("matrix", matrix)
    size = check_size("size", size, (4,))
    check_float("matrix", matrix)
    check_shape("matrix", matrix, (None, 3, 3), "(N, 3, 3)")
    check_batch("matrix", matrix, size[0], "size")
    return _projective_grid(matrix, size[2:], align_corners)


def _projective_grid(matrix: torch.Tensor, spatial, align_corners: bool) -> torch.Tensor:
    dtype = compute_dtype(matrix.dtype)
    m = matrix.to(dtype)
    # Non-finite matrices are computed as the identity and their points set to NaN at the
    # end, so they cannot leak NaN into the gradients of the other images.
    finite = torch.isfinite(m).flatten(1).all(1).view(-1, 1, 1)
    m = torch.where(finite, m, torch.eye(3, dtype=dtype, device=m.device))
    base = homogeneous_grid(spatial, align_corners=align_corners, dtype=dtype, device=m.device)
    uvw = torch.matmul(base, m.transpose(1, 2))  # (N, P, 3)
    uv, w = uvw[..., :2], uvw[..., 2:]
    scale = m[:, 2].abs().sum(-1).view(-1, 1, 1)  # (N, 1, 1): bound on |w| over the image
    valid = w > (16 * torch.finfo(dtype).eps) * scale
    # Double `where`: the division only ever sees safe denominators, so neither the value
    # nor the gradient of the discarded branch can be inf or NaN.
    safe_w = torch.where(valid, w, torch.ones_like(w))
    xy = torch.where(valid, (uv / safe_w).clamp(-FAR, FAR), torch.full_like(uv, FAR))
    xy = torch.where(finite, xy, torch.full_like(xy, float("nan")))
    return xy.reshape(m.shape[0], *spatial, 2).to(matrix.dtype)
