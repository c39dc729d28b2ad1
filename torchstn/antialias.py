"""Anti-aliased sampling: average the input over each output pixel's footprint.

Plain bilinear sampling reads four input pixels around each sample point. Where a warp
shrinks the image (zooming out, or an output smaller than the region it reads), one
output pixel stands for many input pixels and bilinear sampling skips most of them: the
output aliases, and the gradient with respect to the transform comes from a few
scattered pixels.

The footprint of output pixel ``(i, j)`` is the parallelogram ``c + J [-1/2, 1/2]^2``,
with ``c`` its sample point and ``J`` the local Jacobian of the output-to-input map in
input pixels per output pixel (estimated from the sampling grid: central differences
between neighbouring output pixels, one-sided at the edges). Its columns ``J e_x`` and
``J e_y`` are the footprint's edges. The anti-aliased value is the mean of the input
(interpolated by ``mode``) over ``k_x x k_y`` points spread evenly over the footprint,
``k = ceil(|J e| - 1e-3)`` along each edge, at least 1 and at most :data:`MAX_SAMPLES`:
points at most one input pixel apart, the same density whatever the warp. Where the
warp does not shrink (both edges at most a pixel long) ``k_x = k_y = 1`` and the value
is the plain sample at ``c``, bit for bit; an axis-aligned shrink by an integer factor
``s`` puts the ``s x s`` points on input pixel centres, which is exactly the area
average (``avg_pool2d``). Projective and TPS warps get a footprint per output pixel.

The method is footprint supersampling (see ``docs/antialias.md`` for the measurements
behind the choice): it is exact where it should be (bilinear, area average), works
for every transform family and every grid, and is differentiable in the input and in
the grid (through the sample points and the footprint edges); the counts ``k`` are
piecewise constant and carry no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MAX_SAMPLES", "antialiased_sample", "footprint", "sample_counts"]

#: Most points along one footprint edge: a footprint longer than this many input pixels
#: is sampled at points more than a pixel apart.
MAX_SAMPLES = 32
# A shrink by less than this many pixels per output pixel is not anti-aliased (k = 1).
_SLACK = 1e-3


def _steps(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Differences of ``t`` between neighbours along ``dim``: central inside, one-sided at
    both ends, zero along a dimension of size 1."""
    n = t.shape[dim]
    if n == 1:
        return torch.zeros_like(t)
    first = t.narrow(dim, 1, 1) - t.narrow(dim, 0, 1)
    last = t.narrow(dim, n - 1, 1) - t.narrow(dim, n - 2, 1)
    if n == 2:
        return torch.cat([first, last], dim)
    inner = (t.narrow(dim, 2, n - 2) - t.narrow(dim, 0, n - 2)) / 2
    return torch.cat([first, inner, last], dim)


def footprint(grid: torch.Tensor, in_size, align_corners: bool = False):
    """The footprint edges of every output pixel of a 2-D sampling grid.

    Args:
        grid: ``(N, H_out, W_out, 2)`` normalised sample points, as for
            :func:`torchstn.sample`.
        in_size: the input's ``(H, W)``.
        align_corners: the grid's convention.

    Returns:
        ``(ex, ey)``, each ``(N, H_out, W_out, 2)``: the steps of the sample point, in
        input pixels ``(x, y)``, between horizontally (``ex``) and vertically (``ey``)
        neighbouring output pixels.
    """
    unit = _unit(grid, in_size, align_corners)
    return _steps(grid, 2) * unit, _steps(grid, 1) * unit


def _unit(grid: torch.Tensor, in_size, align_corners: bool) -> torch.Tensor:
    """Input pixels per normalised unit, ``(x, y)``."""
    h, w = in_size
    if align_corners:
        return grid.new_tensor([(w - 1) / 2, (h - 1) / 2])
    return grid.new_tensor([w / 2, h / 2])


def sample_counts(edge: torch.Tensor, density: float = 1.0) -> torch.Tensor:
    """Points along a footprint edge ``(..., 2)`` (input pixels): ``ceil(density * length
    - 1e-3)``, from 1 to :data:`MAX_SAMPLES` (1 where the edge is not finite). int64, no
    gradient. ``density``: points per input pixel (1 in :func:`torchstn.sample`; other
    values for measurements, ``scripts/antialias_zoneplate.py``)."""
    with torch.no_grad():
        length = torch.linalg.vector_norm(edge.detach().double(), dim=-1)
        k = torch.ceil(density * length - _SLACK)
        k = torch.where(torch.isfinite(k), k, torch.ones_like(k))
        return k.clamp(1, MAX_SAMPLES).to(torch.int64)


def _offsets(k: torch.Tensor, most: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets ``(a + 1/2) / k - 1/2`` (a < k) of ``most`` points per pixel, and their
    mask; the offsets of points past ``k`` are 0 (they are weighted 0)."""
    a = torch.arange(most, device=k.device, dtype=dtype)
    kk = k.unsqueeze(-1).to(dtype)
    used = a < kk
    return torch.where(used, (a + 0.5) / kk - 0.5, torch.zeros_like(kk)), used


def antialiased_sample(input: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear",
                       padding_mode: str = "zeros", align_corners: bool = False, *,
                       density: float = 1.0) -> torch.Tensor:
    """:func:`torch.nn.functional.grid_sample` averaged over each output pixel's footprint
    (see the module's description). Inputs are validated by :func:`torchstn.sample`.
    ``density``: see :func:`sample_counts`."""
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        raise NotImplementedError(
            "antialias=True does not export yet: the number of samples per output pixel "
            "depends on the data (export with antialias=False)")
    n, c, h, w = input.shape
    _, ho, wo, _ = grid.shape
    # The grid's steps between neighbouring output pixels (normalised), and in pixels.
    sx, sy = _steps(grid, 2), _steps(grid, 1)
    unit = _unit(grid, (h, w), align_corners)
    kx, ky = sample_counts(sx * unit, density), sample_counts(sy * unit, density)
    most_x, most_y = int(kx.max()) if kx.numel() else 1, int(ky.max()) if ky.numel() else 1
    if most_x == 1 and most_y == 1:
        return F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)
    dx, used_x = _offsets(kx, most_x, grid.dtype)  # (N, Ho, Wo, Kx)
    dy, used_y = _offsets(ky, most_y, grid.dtype)  # (N, Ho, Wo, Ky)
    points = (grid[:, :, :, None, None, :]
              + dy[..., :, None, None] * sy[:, :, :, None, None, :]
              + dx[..., None, :, None] * sx[:, :, :, None, None, :])  # (N, Ho, Wo, Ky, Kx, 2)
    per = most_x * most_y
    values = F.grid_sample(input, points.reshape(n, ho, wo * per, 2), mode=mode,
                           padding_mode=padding_mode, align_corners=align_corners)
    weight = (used_y[..., :, None] & used_x[..., None, :]).to(input.dtype)
    weight = weight / (kx * ky).to(input.dtype)[..., None, None]  # (N, Ho, Wo, Ky, Kx)
    values = values.view(n, c, ho, wo, per)
    return (values * weight.view(n, 1, ho, wo, per)).sum(-1)
