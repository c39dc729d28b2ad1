"""Several spatial transformers in one module: in parallel, or one applied in steps.

:class:`ParallelTransformer` runs K transformers that each see the whole input (the paper's
2xST-FCN for MNIST addition and its 4xST-CNN on CUB). :class:`RecurrentTransformer` applies
one transformer in K steps and composes the updates, resampling the original input once
(the inverse compositional STN of Lin and Lucey, CVPR 2017).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._checks import check_choice, check_spatial_size
from .modules import (
    LocalizationNet,
    SpatialTransformer,
    TransformerModule,
    localization_view,
    localize,
    regression_head,
)
from .sampling import MODES, PADDING_MODES, check_input
from .tps import lattice
from .transforms import Transform, list_transforms, resolve_transform
from .warping import check_antialias, list_backends, warp

__all__ = ["ParallelTransformer", "RecurrentTransformer", "tile_params"]

Localization = nn.Module | Callable[[], nn.Module] | None


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _reset(module: nn.Module) -> nn.Module:
    """Fresh initial weights for every submodule that can reset them."""
    for m in module.modules():
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            continue  # initialised on its first forward anyway
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def _check_warp_options(transform: Transform, out_size, mode, padding_mode, backend):
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    check_choice("backend", backend, ["auto", *list_backends()])
    return None if out_size is None else check_spatial_size("out_size", out_size,
                                                            transform.ndim)


def _localizations(localization: Localization, count: int, in_channels: int | None,
                   ndim: int) -> list[nn.Module]:
    """``count`` localisation nets: the default net, copies of a module (each with fresh
    weights: the copies must not start equal), or what a factory returns."""
    if localization is None:
        if in_channels is None:
            raise ValueError("in_channels is required when localization is None")
        return [LocalizationNet(in_channels, ndim=ndim) for _ in range(count)]
    if isinstance(localization, nn.Module):
        return [localization] + [_reset(copy.deepcopy(localization)) for _ in range(count - 1)]
    if callable(localization):
        nets = [localization() for _ in range(count)]
        for net in nets:
            if not isinstance(net, nn.Module):
                raise TypeError(f"localization factory must return an nn.Module, got "
                                f"{type(net).__name__}")
        if len({id(n) for n in nets}) != count:
            raise ValueError("localization factory returned the same module twice: it must "
                             "build a new one per call")
        return nets
    raise TypeError(f"localization must be an nn.Module, a factory of one, or None, got "
                    f"{type(localization).__name__}")


def tile_params(transform: str | Transform, k: int, *, dtype=torch.float32,
                device=None) -> torch.Tensor:
    """Parameters ``(k, num_params)`` of ``k`` crops tiling the image.

    The crops are the cells of a grid of ``ceil(sqrt(k))`` columns and as many rows as
    needed, row by row. Families with one scale (``attention``, ``similarity``) get square
    crops of the smaller cell side; ``affine``, ``projective`` and ``tps`` get the cells
    themselves. Families that cannot scale (``translation``, ``rotation``) are refused.

    Example:
        >>> tile_params("attention", 2)
        tensor([[-0.6931, -0.5000,  0.0000],
                [-0.6931,  0.5000,  0.0000]])
    """
    t = resolve_transform(transform)
    _check_count("k", k)
    if t.ndim != 2:
        raise ValueError(f"tile_params places 2-D crops; transform {t.name!r} is "
                         f"{t.ndim}-D")
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    i = torch.arange(k, dtype=torch.float64)
    cx = -1 + (2 * (i % cols) + 1) / cols
    cy = -1 + (2 * torch.div(i, cols, rounding_mode="floor") + 1) / rows
    if not t.is_matrix:  # TPS: the lattice shrunk into each cell
        points = lattice(t.grid_size, dtype=torch.float64)
        scale = torch.tensor([1 / cols, 1 / rows], dtype=torch.float64)
        source = points * scale + torch.stack([cx, cy], 1)[:, None]
        return source.reshape(k, -1).to(dtype=dtype, device=device)
    for sx, sy in ((1 / cols, 1 / rows), (1 / max(rows, cols),) * 2):
        m = torch.zeros(k, 3, 3, dtype=torch.float64)
        m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
        m[:, 0, 2], m[:, 1, 2] = cx, cy
        params = t.from_matrix(m)
        if torch.allclose(t.matrix(params), m, atol=1e-9):
            return params.to(dtype=dtype, device=device)
    raise ValueError(f"init='tile' needs a family that can scale and translate; transform "
                     f"{t.name!r} cannot (use attention, similarity, affine, projective or tps)")


class ParallelTransformer(TransformerModule):
    """K spatial transformers side by side, each seeing the whole input (paper, Sec. 4.2-4.3).

    Each transformer has its own regression head; the localisation nets are K separate
    networks (default) or one shared trunk (``shared_localization=True``), whose features
    are computed once and feed all K heads.

    Args:
        k: number of transformers.
        transform: family name or built :class:`~torchstn.transforms.Transform`.
        localization: ``None`` (a :class:`~torchstn.LocalizationNet` each, on
            ``in_channels``), an ``nn.Module`` (the shared trunk; unshared, the first
            transformer gets it and the others deep copies, re-initialised by each
            submodule's ``reset_parameters``: parameters of modules without one, and any
            custom initialisation, stay copies, so pass a factory then), or a factory
            called once per network.
        shared_localization: one trunk for all K heads.
        init: ``"identity"`` (every transformer starts at the identity), ``"tile"``
            (crops tiling the image, as the paper initialises its CUB transformers; see
            :func:`tile_params`), or a tensor ``(k, num_params)`` of starting parameters.
        output: ``"concat"`` (the K outputs on the channel axis) or ``"list"``.
        out_size, mode, padding_mode, align_corners, antialias, loc_size, in_channels,
            loc_features, backend: as in :class:`~torchstn.SpatialTransformer`, for every
            transformer (the copy at ``loc_size`` is made once for all of them).

    Shape:
        ``x: (N, C, H, W)`` -> ``(N, k * C, *out_size)`` with ``output="concat"``, else a
        list of k tensors ``(N, C, *out_size)``; with ``return_params=True`` also a list of
        k parameter tensors ``(N, num_params)``.

    Example:
        >>> pt = ParallelTransformer(2, "attention", in_channels=1, init="tile")
        >>> pt(torch.randn(3, 1, 28, 28)).shape
        torch.Size([3, 2, 28, 28])
    """

    def __init__(
        self,
        k: int,
        transform: str | Transform = "affine",
        *,
        localization: Localization = None,
        shared_localization: bool = False,
        init: str | torch.Tensor = "identity",
        output: str = "concat",
        out_size=None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        antialias: bool = False,
        loc_size=None,
        in_channels: int | None = None,
        loc_features: int | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        self.k = _check_count("k", k)
        self.transform = resolve_transform(transform)
        self.output = check_choice("output", output, ["concat", "list"])
        self.shared_localization = bool(shared_localization)
        starts = self._starts(init)
        self.loc_size = None if loc_size is None else check_spatial_size(
            "loc_size", loc_size, self.transform.ndim)
        self.antialias = check_antialias(antialias, self.transform)
        options = dict(out_size=out_size, mode=mode, padding_mode=padding_mode,
                       align_corners=align_corners, antialias=antialias, loc_size=loc_size,
                       backend=backend)
        if self.shared_localization:
            self.out_size = _check_warp_options(self.transform, out_size, mode, padding_mode,
                                                backend)
            trunk = _localizations(localization, 1, in_channels, self.transform.ndim)[0]
            self.localization = trunk
            self.heads = nn.ModuleList(regression_head(trunk, start, loc_features)
                                       for start in starts)
            self.transformers = None
            self.mode, self.padding_mode = mode, padding_mode
            self.align_corners, self.backend = bool(align_corners), backend
        else:
            nets = _localizations(localization, self.k, in_channels, self.transform.ndim)
            self.transformers = nn.ModuleList(
                SpatialTransformer(net, self.transform, loc_features=loc_features, **options)
                for net in nets)
            for stn, start in zip(self.transformers, starts):
                stn.head = regression_head(stn.localization, start, loc_features)
            self.localization = self.heads = None

    def _starts(self, init) -> list[torch.Tensor]:
        if isinstance(init, torch.Tensor):
            shape = (self.k, self.transform.num_params)
            if tuple(init.shape) != shape:
                raise ValueError(f"init must be 'identity', 'tile' or a tensor of shape "
                                 f"{shape} (k, num_params), got shape {tuple(init.shape)}")
            if not init.is_floating_point() or not torch.isfinite(init).all():
                raise ValueError("init must hold finite floating-point parameters")
            return [row.detach().float().clone() for row in init]
        check_choice("init", init, ["identity", "tile"])
        if init == "tile":
            return list(tile_params(self.transform, self.k))
        return [self.transform.identity() for _ in range(self.k)]

    @classmethod
    def from_transformers(cls, transformers: Sequence[SpatialTransformer], *,
                          output: str = "concat") -> ParallelTransformer:
        """A parallel module of given transformers (any families, any localisation nets)."""
        transformers = list(transformers)
        if not transformers or not all(isinstance(t, SpatialTransformer) for t in transformers):
            raise ValueError("transformers must be a non-empty sequence of SpatialTransformer")
        sizes = {t.out_size for t in transformers}
        if output == "concat" and len(sizes) > 1:
            raise ValueError(f"output='concat' needs one out_size for every transformer, got "
                             f"{[t.out_size for t in transformers]} (use output='list')")
        self = cls.__new__(cls)
        TransformerModule.__init__(self)
        self.k = len(transformers)
        self.transform = transformers[0].transform
        self.output = check_choice("output", output, ["concat", "list"])
        self.shared_localization = False
        self.transformers = nn.ModuleList(transformers)
        self.localization = self.heads = None
        sizes = {t.loc_size for t in transformers}
        # One copy for all when they agree; else each transformer makes its own.
        self.loc_size = sizes.pop() if len(sizes) == 1 else None
        self.antialias = False
        return self

    def members(self) -> list[nn.Module]:
        return list(self.transformers) if self.transformers is not None else []

    def extra_repr(self) -> str:
        return (f"k={self.k}, transform={self.transform!r}, "
                f"shared_localization={self.shared_localization}, output={self.output!r}")

    def parameters_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The K transformers' parameters ``(N, num_params)`` predicted for ``x``."""
        x = check_input(x, ranks=(self.transform.ndim + 2,))
        seen = localization_view(x, self.loc_size)
        if self.transformers is not None:
            return [stn.parameters_of_view(seen if stn.loc_size == self.loc_size
                                           else localization_view(x, stn.loc_size))
                    for stn in self.transformers]
        features = localize(self.localization, self.heads[0], seen)
        return [head(features) for head in self.heads]

    def forward(self, x: torch.Tensor, return_params: bool = False):
        params = self.parameters_of(x)
        if self.transformers is not None:
            outs = [stn.warp(x, p) for stn, p in zip(self.transformers, params)]
        else:
            outs = [warp(x, p, self.transform, out_size=self.out_size, mode=self.mode,
                         padding_mode=self.padding_mode, align_corners=self.align_corners,
                         antialias=self.antialias, backend=self.backend)
                    for p in params]
        out = torch.cat(outs, dim=1) if self.output == "concat" else outs
        return (out, params) if return_params else out


class RecurrentTransformer(TransformerModule):
    """One spatial transformer applied in ``steps`` steps, composing its updates.

    Step 1 predicts parameters from the input, as :class:`~torchstn.SpatialTransformer`
    does. Every later step warps the ORIGINAL input by the transform so far, predicts an
    update from that image and composes it (``transform.compose(so_far, update)``: the
    update acts on the current warp). The output is one warp of the input by the final
    transform, never a warp of a warp (which would blur). With shared weights this is the
    inverse compositional STN of Lin and Lucey (CVPR 2017).

    Args:
        localization: as in :class:`ParallelTransformer` (with ``shared_weights=False``
            one net per step).
        transform: a matrix family (one that composes: not ``tps``).
        steps: number of steps K.
        shared_weights: one localisation net and head for every step (default), or one
            per step.
        loc_size: spatial size of the intermediate warps the localisation net sees
            (default: the input's).
        out_size, mode, padding_mode, align_corners, antialias, in_channels, loc_features,
            backend: as in :class:`~torchstn.SpatialTransformer` (``antialias`` for every
            warp, the intermediate ones at ``loc_size`` included).

    Every head starts at the identity, so the untrained module is the identity for every K.
    The composition runs in float32 (or the input's wider type), outside autocast. A
    projective update whose product with the transform so far is no homography with a
    positive last entry is skipped for that image, which keeps its transform so far
    (rather than an error, or a NaN that would reach every gradient of the batch).

    Shape:
        ``x: (N, C, H, W)`` -> ``(N, C, *out_size)``; with ``return_params=True`` also the
        final parameters ``(N, num_params)``.

    Example:
        >>> rt = RecurrentTransformer(None, "affine", steps=3, in_channels=1)
        >>> rt(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        localization: Localization = None,
        transform: str | Transform = "affine",
        steps: int = 2,
        *,
        shared_weights: bool = True,
        loc_size=None,
        out_size=None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        antialias: bool = False,
        in_channels: int | None = None,
        loc_features: int | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        self.transform = resolve_transform(transform)
        self.antialias = check_antialias(antialias, self.transform)
        if not self.transform.is_matrix:
            matrix = [n for n in list_transforms() if resolve_transform(n).is_matrix]
            raise ValueError(f"RecurrentTransformer composes transforms: transform "
                             f"{self.transform.name!r} cannot compose (families that can: "
                             f"{matrix})")
        self.steps = _check_count("steps", steps)
        self.shared_weights = bool(shared_weights)
        ndim = self.transform.ndim
        self.out_size = _check_warp_options(self.transform, out_size, mode, padding_mode,
                                            backend)
        self.loc_size = None if loc_size is None else check_spatial_size("loc_size", loc_size,
                                                                         ndim)
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, bool(align_corners)
        self.backend = backend
        nets = _localizations(localization, 1 if self.shared_weights else self.steps,
                              in_channels, ndim)
        identity = self.transform.identity()
        self.localizations = nn.ModuleList(nets)
        self.heads = nn.ModuleList(regression_head(net, identity, loc_features) for net in nets)

    def extra_repr(self) -> str:
        return (f"transform={self.transform!r}, steps={self.steps}, "
                f"shared_weights={self.shared_weights}, out_size={self.out_size}, "
                f"loc_size={self.loc_size}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}")

    def _warp(self, x, params, out_size):
        return warp(x, params, self.transform, out_size=out_size, mode=self.mode,
                    padding_mode=self.padding_mode, align_corners=self.align_corners,
                    antialias=self.antialias, backend=self.backend)

    def parameters_of(self, x: torch.Tensor, *, every_step: bool = False):
        """The composed parameters ``(N, num_params)`` after the last step (with
        ``every_step=True``, a list of them after each step)."""
        x = check_input(x, ranks=(self.transform.ndim + 2,))
        so_far: list[torch.Tensor] = []
        for step in range(self.steps):
            i = 0 if self.shared_weights else step
            net, head = self.localizations[i], self.heads[i]
            if so_far:
                seen = self._warp(x, so_far[-1], self.loc_size)
            elif self.loc_size is not None:  # every step sees the same size
                identity = self.transform.identity(dtype=x.dtype, device=x.device)
                seen = self._warp(x, identity.expand(len(x), -1), self.loc_size)
            else:
                seen = x
            update = head(localize(net, head, seen))
            so_far.append(update if not so_far else self._compose(so_far[-1], update))
        return so_far if every_step else so_far[-1]

    def _compose(self, before: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        # In float32 at least, outside autocast: the product is not rounded to bfloat16 at
        # every step. An image whose product the family cannot express keeps its transform.
        dtype = torch.promote_types(before.dtype, torch.float32)
        with torch.autocast(before.device.type, enabled=False):
            before, update = before.to(dtype), update.to(dtype)
            composed = self.transform._compose_unchecked(before, update)
            bad = torch.isnan(composed).any(1, keepdim=True) & ~torch.isnan(update).any(
                1, keepdim=True) & ~torch.isnan(before).any(1, keepdim=True)
            return torch.where(bad, before, composed)

    def forward(self, x: torch.Tensor, return_params: bool = False):
        params = self.parameters_of(x)
        out = self._warp(x, params, self.out_size)
        return (out, params) if return_params else out
