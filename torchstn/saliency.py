"""The saliency sampler: a non-parametric zoom (Recasens, Kellnhofer, Stent, Matusik,
Torralba, "Learning to Zoom: a Saliency-Based Sampling Layer for Neural Networks",
ECCV 2018).

A saliency map ``S`` over the image (a small grid of cells) attracts the sampling
points: each point of the grid is the mean of the cell positions ``x'`` around it,
weighted by their saliency and a Gaussian of their distance (the paper's Eq. 3-4)::

    u(x) = sum_x' S(x') k(x, x') x' / sum_x' S(x') k(x, x')

so output pixels crowd where the saliency is high (that region is magnified) and thin
out elsewhere, without leaving the image. The saliency map is padded by replicating its
border (the paper's border handling): without it, the points near the border would be
pulled towards the centre even by a uniform saliency. A uniform saliency gives the
identity grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_spatial_size, check_tensor, shape_str
from .grids import affine_grid, compute_dtype
from .modules import localization_view
from .sampling import MODES, PADDING_MODES, check_input, sample

__all__ = ["SaliencySampler", "saliency_grid"]


def _gaussian(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    return torch.exp(-(t**2) / (2 * sigma**2))


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' convolution of (N, C, H, W) by the 1-D kernel k, per channel."""
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def saliency_grid(saliency: torch.Tensor, out_size, sigma: float, *, padding: int | None = None,
                  align_corners: bool = False) -> torch.Tensor:
    """The sampling grid of a saliency map (see the module's description).

    Args:
        saliency: ``(N, 1, h, w)`` non-negative weights over a grid of cells covering the
            image (any scale: only ratios count). Where the Gaussian sees no saliency at
            all, the grid keeps the identity.
        out_size: ``(H_out, W_out)`` of the grid.
        sigma: standard deviation of the distance kernel, in cells (the paper: a
            full width at half maximum of 13 cells on 31 x 31, ``sigma = 13 / 2.355``).
        padding: cells of replicated border (default and at least: ``ceil(3 sigma)``,
            the kernel's radius).
        align_corners: the convention of the returned grid, as for
            :func:`torchstn.sample`.

    Returns:
        ``(N, H_out, W_out, 2)`` normalised sample points in ``[-1, 1]``, dtype of
        ``saliency``. Computed at the cells' centres and interpolated bilinearly (as a
        displacement from the identity) to ``out_size``.

    Example:
        >>> grid = saliency_grid(torch.ones(1, 1, 8, 8), (16, 16), sigma=2.0)
        >>> torch.allclose(grid, affine_grid(torch.eye(2, 3)[None], (1, 1, 16, 16)))
        True
    """
    saliency = check_tensor("saliency", saliency)
    if saliency.dim() != 4 or saliency.shape[1] != 1:
        raise ValueError(f"saliency must have shape (N, 1, h, w), got "
                         f"{shape_str(saliency.shape)}")
    if not saliency.is_floating_point():
        raise TypeError(f"saliency must be floating point, got {saliency.dtype}")
    out_size = check_spatial_size("out_size", out_size, 2)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of cells, got {sigma!r}")
    radius = math.ceil(3 * sigma)
    if padding is None:
        padding = radius
    if not isinstance(padding, int) or padding < radius:
        raise ValueError(f"padding must be an int >= ceil(3 sigma) = {radius}, got {padding!r}")
    n, _, h, w = saliency.shape
    dtype = compute_dtype(saliency.dtype)
    s = saliency.to(dtype)
    padded = F.pad(s, (padding,) * 4, mode="replicate")
    # Cell centres of the padded grid, normalised (align_corners=False: the unpadded
    # cells tile [-1, 1]; the padding extends beyond).
    xs = (2 * (torch.arange(w + 2 * padding, dtype=dtype, device=s.device) - padding) + 1) / w - 1
    ys = (2 * (torch.arange(h + 2 * padding, dtype=dtype, device=s.device) - padding) + 1) / h - 1
    k = _gaussian(float(sigma), radius, s)
    if padding > radius:  # only the kernel's reach counts: crop what it cannot see
        cut = padding - radius
        padded = padded[..., cut:-cut, cut:-cut]
        xs, ys = xs[cut:-cut], ys[cut:-cut]
    weighted = torch.cat([padded, padded * xs.view(1, 1, 1, -1), padded * ys.view(1, 1, -1, 1)],
                         dim=1)
    total, sx, sy = _blur(weighted, k).unbind(1)  # each (N, h, w)
    cx, cy = xs[radius:radius + w].view(1, 1, -1), ys[radius:radius + h].view(1, -1, 1)
    seen = total > torch.finfo(dtype).tiny
    safe = torch.where(seen, total, torch.ones_like(total))
    dx = torch.where(seen, sx / safe - cx, torch.zeros_like(sx))
    dy = torch.where(seen, sy / safe - cy, torch.zeros_like(sy))
    shift = F.interpolate(torch.stack([dx, dy], 1), size=out_size, mode="bilinear",
                          align_corners=False)
    eye = torch.eye(2, 3, dtype=dtype, device=s.device).expand(n, 2, 3)
    base = affine_grid(eye, (n, 1, *out_size), align_corners=align_corners)
    return (base + shift.permute(0, 2, 3, 1)).clamp(-1, 1)


class _SaliencyNet(nn.Module):
    """The default saliency network: three 3x3 convolution + BatchNorm + ReLU stages (the
    first two pooled by 2), a 1x1 convolution to one channel, pooled to the grid. Its last
    layer starts at zero: a uniform saliency, the identity zoom."""

    def __init__(self, in_channels: int, width: int = 16):
        super().__init__()
        layers = []
        c = in_channels
        for i in range(3):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c = width
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.features(x))


class SaliencySampler(nn.Module):
    """A learned zoom: a saliency net on a small copy, the saliency grid, the full-resolution
    input sampled by it (anti-aliased).

    ``forward(x)``: the saliency net reads ``x`` resized to ``loc_size``
    (:func:`torchstn.modules.localization_view`); its one-channel output is pooled to
    ``grid_size``, turned into weights by a softmax over the cells (as the paper does),
    and :func:`saliency_grid` samples ``x`` itself at ``out_size``.

    Args:
        saliency_net: any ``nn.Module`` mapping ``(N, C, *loc_size)`` to ``(N, 1, h, w)``
            scores (adaptive-average pooled to ``grid_size``). ``None``: a small default
            net (three conv + BatchNorm + ReLU stages) on ``in_channels``, whose last layer
            starts at zero, so the untrained sampler is a plain (anti-aliased) resize.
        out_size: ``(H, W)`` of the output.
        loc_size: ``(H, W)`` of the copy the saliency net sees; default: the input.
        grid_size: cells of the saliency map per side (the paper: 31).
        sigma: the distance kernel's standard deviation in cells (default: the paper's
            full width at half maximum of 13 cells on 31, scaled to ``grid_size``).
        antialias, mode, padding_mode, align_corners: as in :func:`torchstn.sample`.
        in_channels: required when ``saliency_net`` is ``None``.

    Shape:
        ``x: (N, C, H, W)`` -> ``(N, C, *out_size)``; with ``return_saliency=True`` also
        the weights ``(N, 1, grid_size, grid_size)`` (they sum to 1 per image).

    Example:
        >>> zoom = SaliencySampler(None, in_channels=3, out_size=(64, 64), loc_size=(64, 64))
        >>> zoom(torch.randn(2, 3, 256, 256)).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, saliency_net: nn.Module | None = None, *, out_size, loc_size=None,
                 grid_size: int = 31, sigma: float | None = None, antialias: bool = True,
                 mode: str = "bilinear", padding_mode: str = "border",
                 align_corners: bool = False, in_channels: int | None = None):
        super().__init__()
        if saliency_net is None:
            if in_channels is None:
                raise ValueError("in_channels is required when saliency_net is None")
            saliency_net = _SaliencyNet(in_channels)
        elif not isinstance(saliency_net, nn.Module):
            raise TypeError(f"saliency_net must be an nn.Module or None, got "
                            f"{type(saliency_net).__name__}")
        if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
        self.saliency_net = saliency_net
        self.out_size = check_spatial_size("out_size", out_size, 2)
        self.loc_size = None if loc_size is None else check_spatial_size("loc_size", loc_size, 2)
        self.grid_size = grid_size
        self.sigma = float(sigma) if sigma is not None else 13 / 31 * grid_size / 2.3548
        self.antialias = bool(antialias)
        self.mode = check_choice("mode", mode, MODES)
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.align_corners = bool(align_corners)

    def extra_repr(self) -> str:
        return (f"out_size={self.out_size}, loc_size={self.loc_size}, "
                f"grid_size={self.grid_size}, sigma={self.sigma:.3g}, "
                f"antialias={self.antialias}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}")

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """The saliency weights ``(N, 1, grid_size, grid_size)`` for ``x``."""
        scores = self.saliency_net(localization_view(x, self.loc_size))
        if not isinstance(scores, torch.Tensor) or scores.dim() != 4 or scores.shape[:2] != (
                x.shape[0], 1):
            got = shape_str(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(f"saliency_net must return (N, 1, h, w) with N = {x.shape[0]}, "
                             f"got {got}")
        scores = F.adaptive_avg_pool2d(scores.float(), self.grid_size)
        n = scores.shape[0]
        return torch.softmax(scores.reshape(n, -1), dim=1).view_as(scores)

    def forward(self, x: torch.Tensor, return_saliency: bool = False):
        x = check_input(x, ranks=(4,))
        weights = self.saliency(x)
        work = compute_dtype(x.dtype)
        grid = saliency_grid(weights.to(work), self.out_size, self.sigma,
                             align_corners=self.align_corners)
        out = sample(x.to(work), grid, mode=self.mode, padding_mode=self.padding_mode,
                     align_corners=self.align_corners, antialias=self.antialias).to(x.dtype)
        return (out, weights) if return_saliency else out
