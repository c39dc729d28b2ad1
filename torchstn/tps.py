"""Thin-plate-spline (TPS) sampling grids (paper, Sec. 3.2 and appendix A.2).

A TPS is the smoothest map ``f: R^2 -> R^2`` (least bending energy) that sends each of
K target control points ``t_k`` (laid out in the OUTPUT) to its source point ``s_k`` in
the INPUT:

    f(p) = a_0 + A p + sum_k w_k U(|p - t_k|^2),      U(r2) = r2 log r2,

with ``sum_k w_k = 0`` and ``sum_k w_k t_k = 0``. The coefficients solve the linear
system ``L [w; a] = [s; 0]``, ``L = [[U(|t_i - t_j|^2), T], [T^T, 0]]``,
``T = [1, t]``. ``L`` depends only on the targets, so
``grid = B @ source`` with ``B = [U(|g - t|^2), 1, g] @ L^-1[:, :K]`` (P x K), a matrix
that depends only on the target layout and the output size: it is computed once (in
float64) and cached, and the grid is one batched matrix product, linear (hence cheaply
differentiable) in the source points.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ._checks import check_batch, check_float, check_shape, check_size, check_tensor, shape_str
from .grids import compute_dtype, homogeneous_grid

__all__ = ["lattice", "tps_grid"]


def lattice(grid_size: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """A regular ``grid_size x grid_size`` lattice of control points over ``[-1, 1]^2``.

    Returns:
        ``(grid_size**2, 2)`` points ``(x, y)``, row-major (x varies fastest).

    Example:
        >>> lattice(2)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]])
    """
    if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
    t = torch.linspace(-1.0, 1.0, grid_size, dtype=dtype, device=device)
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def _radial(r2: torch.Tensor) -> torch.Tensor:
    """U(r2) = r2 log r2, with U(0) = 0 (its limit); safe for gradients at r2 = 0."""
    return r2 * torch.log(torch.where(r2 > 0, r2, torch.ones_like(r2)))


def _system(target: torch.Tensor) -> torch.Tensor:
    """L = [[U(|t_i - t_j|^2), T], [T^T, 0]] for targets ``(..., K, 2)``: ``(..., K+3, K+3)``."""
    ones = torch.ones(*target.shape[:-1], 1, dtype=target.dtype, device=target.device)
    t_h = torch.cat([ones, target], dim=-1)  # (..., K, 3)
    r2 = (target.unsqueeze(-2) - target.unsqueeze(-3)).pow(2).sum(-1)  # (..., K, K)
    zeros = torch.zeros(*target.shape[:-2], 3, 3, dtype=target.dtype, device=target.device)
    return torch.cat(
        [torch.cat([_radial(r2), t_h], -1), torch.cat([t_h.transpose(-1, -2), zeros], -1)], -2
    )


def _features(target: torch.Tensor, spatial, align_corners: bool) -> torch.Tensor:
    """[U(|g - t|^2), 1, g] for the output points g and targets ``(..., K, 2)``:
    ``(..., P, K + 3)``."""
    g = homogeneous_grid(spatial, align_corners=align_corners, dtype=target.dtype,
                         device=target.device)[:, :2]  # (P, 2)
    d2 = (g.unsqueeze(-2) - target.unsqueeze(-3)).pow(2).sum(-1)  # (..., P, K)
    g_h = torch.cat([torch.ones_like(g[:, :1]), g], dim=-1).expand(*d2.shape[:-1], 3)
    return torch.cat([_radial(d2), g_h], dim=-1)


def _mapping(target: torch.Tensor, spatial, align_corners: bool) -> torch.Tensor:
    """B = [U, 1, g] @ L^-1[:, :K] for targets ``(..., K, 2)``; returns ``(..., P, K)``."""
    k = target.shape[-2]
    system = _system(target)
    rhs = torch.eye(k + 3, k, dtype=target.dtype, device=target.device)
    inv_k, info = torch.linalg.solve_ex(system, rhs.expand(*system.shape[:-1], k))
    if not torch.compiler.is_compiling() and (
        bool((info != 0).any()) or not bool(torch.isfinite(inv_k).all())
    ):
        raise ValueError(
            "target_points give a singular TPS system: they need at least 3 distinct, "
            "non-collinear points"
        )
    return _features(target, spatial, align_corners) @ inv_k  # (..., P, K)


_LATTICE_INVERSES: dict[int, tuple] = {}


def _lattice_inverse(grid_size: int) -> tuple:
    """L^-1[:, :K] of the default lattice, ``(K + 3) x K`` Python floats (float64).

    Plain numbers, computed once per grid size: torch.compile and torch.export take them
    as a constant of the graph (no linear solve in it, nothing ONNX lacks).
    """
    if grid_size not in _LATTICE_INVERSES:
        # NumPy, not torch: under torch.export the torch operations would be traced.
        t = np.linspace(-1.0, 1.0, grid_size)
        y, x = np.meshgrid(t, t, indexing="ij")
        target = np.stack([x.reshape(-1), y.reshape(-1)], axis=1)  # as lattice()
        k = len(target)
        r2 = ((target[:, None] - target[None]) ** 2).sum(-1)
        radial = r2 * np.log(np.where(r2 > 0, r2, 1.0))
        t_h = np.concatenate([np.ones((k, 1)), target], axis=1)
        system = np.block([[radial, t_h], [t_h.T, np.zeros((3, 3))]])
        inv = np.linalg.solve(system, np.eye(k + 3, k))
        _LATTICE_INVERSES[grid_size] = tuple(map(tuple, inv.tolist()))
    return _LATTICE_INVERSES[grid_size]


# What torch.compiler.assume_constant_result(_lattice_inverse) does, without importing
# torch._dynamo (a second of import time, Triton and SymPy with it) when torchstn is
# imported; tests/ops/test_operators.py checks that Dynamo still reads this mark.
_lattice_inverse._dynamo_marked_constant = True


def _lattice_mapping_uncached(grid_size: int, spatial, align_corners: bool, dtype,
                              device) -> torch.Tensor:
    target = lattice(grid_size, dtype=torch.float64, device=device)
    inv = torch.tensor(_lattice_inverse(grid_size), dtype=torch.float64, device=device)
    return (_features(target, spatial, align_corners) @ inv).to(dtype)


# Each entry is (H*W, K) floats: 4 MB for 256x256 with K = 16 in float32.
@lru_cache(maxsize=8)
def _lattice_mapping(grid_size: int, spatial, align_corners: bool, dtype, device) -> torch.Tensor:
    # Built as an ordinary tensor even inside inference_mode, so a cached entry can be
    # used later by code that records gradients.
    with torch.inference_mode(False), torch.no_grad():
        return _lattice_mapping_uncached(grid_size, spatial, align_corners, dtype, device)


def tps_grid(
    source_points: torch.Tensor,
    size,
    *,
    target_points: torch.Tensor | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Sampling grid of the thin-plate spline that sends ``target_points`` to ``source_points``.

    Convention: control point ``k`` of the OUTPUT, ``target_points[k]``, reads the INPUT
    at ``source_points[n, k]``; between control points the map is the thin-plate spline
    (normalised coordinates, as :func:`torchstn.affine_grid`). Source equal to target is
    the identity; source points that are an affine image of the targets give exactly that
    affine grid.

    Args:
        source_points: ``(N, K, 2)`` points ``(x, y)``; the grid is differentiable in them.
        size: the OUTPUT size ``(N, C, H, W)``.
        target_points: ``(K, 2)`` shared by the batch or ``(N, K, 2)`` per image. Default:
            the regular ``sqrt(K) x sqrt(K)`` :func:`lattice` over ``[-1, 1]^2`` (K must
            be a perfect square >= 4); its solve is computed once and cached.
        align_corners: as in :func:`torch.nn.functional.grid_sample`.

    Under ``torch.compile`` or ``torch.export`` the check that ``target_points`` give a
    solvable system is skipped (it would be a data-dependent branch): singular targets
    give NaN there instead of an error.

    Returns:
        ``(N, H, W, 2)``, dtype of ``source_points``.

    Example:
        >>> src = lattice(2).unsqueeze(0) * 0.5  # zoom in by 2
        >>> tps_grid(src, (1, 1, 1, 2))[0, 0]
        tensor([[-0.2500,  0.0000],
                [ 0.2500,  0.0000]])
    """
    source_points = check_tensor("source_points", source_points)
    size = check_size("size", size, (4,))
    check_float("source_points", source_points)
    check_shape("source_points", source_points, (None, None, 2), "(N, K, 2)")
    check_batch("source_points", source_points, size[0], "size")
    n, k = source_points.shape[:2]
    if target_points is None:
        g = math.isqrt(k)
        if g * g != k or g < 2:
            raise ValueError(
                "source_points must hold K = g * g control points (g >= 2) for the default "
                f"g x g target lattice, got K = {k}; pass target_points for other layouts"
            )
    else:
        target_points = check_tensor("target_points", target_points)
        check_float("target_points", target_points)
        if target_points.dim() not in (2, 3) or target_points.shape[-2:] != (k, 2):
            raise ValueError(
                f"target_points must have shape ({k}, 2) or (N, {k}, 2) to match "
                f"source_points {shape_str(source_points.shape)}, got "
                f"{shape_str(target_points.shape)}"
            )
        if target_points.dim() == 3:
            check_batch("target_points", target_points, n, "source_points")
        if target_points.device != source_points.device:
            raise ValueError(
                f"target_points is on {target_points.device} but source_points is on "
                f"{source_points.device}"
            )
    return _tps_grid(source_points, size[2:], target_points, bool(align_corners))


def _tps_grid(source_points, spatial, target_points, align_corners: bool) -> torch.Tensor:
    """Unchecked :func:`tps_grid` for a spatial output size."""
    n, k = source_points.shape[:2]
    dtype = compute_dtype(source_points.dtype)
    if target_points is None and torch.compiler.is_compiling():
        # Traced (torch.compile, torch.export): built in the graph from constants, since
        # a cache of tensors cannot be traced.
        mapping = _lattice_mapping_uncached(math.isqrt(k), tuple(spatial), align_corners,
                                            dtype, source_points.device)
    elif target_points is None:
        mapping = _lattice_mapping(math.isqrt(k), tuple(spatial), align_corners, dtype,
                                   source_points.device)  # (P, K)
    else:
        mapping = _mapping(target_points.double(), spatial, align_corners).to(dtype)
    grid = torch.matmul(mapping, source_points.to(dtype))  # (N, P, 2)
    return grid.reshape(n, *spatial, 2).to(source_points.dtype)
