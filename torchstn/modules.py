"""``nn.Module`` wrappers: the Spatial Transformer (paper, Sec. 3, Fig. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_spatial_size
from .sampling import MODES, PADDING_MODES, check_input
from .transforms import Transform, resolve_transform
from .warping import check_antialias, list_backends, warp

__all__ = ["LocalizationNet", "SpatialTransformer", "TransformerModule", "find_transformers",
           "localization_view"]


class LocalizationNet(nn.Module):
    """A small default localisation network that works on any input size.

    Two convolution + ReLU + max-pool stages, adaptive average pooling to a fixed
    ``pool`` size, then a fully connected layer with ReLU. Used by
    :class:`SpatialTransformer` when no localisation network is given.

    Args:
        in_channels: channels of the input.
        ndim: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
        channels: widths of the two convolutions.
        out_features: size of the output feature vector.
        pool: side of the adaptive pooling output.

    Shape:
        input ``(N, in_channels, *spatial)`` -> output ``(N, out_features)``.
    """

    def __init__(self, in_channels: int, *, ndim: int = 2, channels=(16, 32),
                 out_features: int = 64, pool: int = 4):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        # ceil_mode keeps 1-pixel inputs valid; padding keeps the spatial size per conv.
        maxpool = nn.MaxPool2d if ndim == 2 else nn.MaxPool3d
        avgpool = nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d
        c1, c2 = channels
        self.features = nn.Sequential(
            conv(in_channels, c1, 5, padding=2), maxpool(2, ceil_mode=True), nn.ReLU(),
            conv(c1, c2, 5, padding=2), maxpool(2, ceil_mode=True), nn.ReLU(),
            avgpool(pool), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(c2 * pool**ndim, out_features), nn.ReLU())
        self.in_channels, self.out_features = in_channels, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def localize(localization: nn.Module, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``localization(x)`` flattened to ``(N, F)``, checked against the ``head`` it feeds."""
    if isinstance(localization, LocalizationNet) and x.shape[1] != localization.in_channels:
        raise ValueError(
            f"input has {x.shape[1]} channels but the default localization net was built "
            f"for in_channels = {localization.in_channels}"
        )
    features = localization(x)
    if not isinstance(features, torch.Tensor) or features.dim() < 2 or (
        features.shape[0] != x.shape[0]
    ):
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(
            f"localization must return a tensor (N, F) with N = {x.shape[0]}, got {got}"
        )
    features = features.flatten(1)
    expected = head.in_features
    if not isinstance(head, nn.LazyLinear) and features.shape[1] != expected:
        raise ValueError(
            f"localization returned {features.shape[1]} features per image but the "
            f"regression head expects loc_features = {expected}"
        )
    return features


def localization_view(x: torch.Tensor, loc_size) -> torch.Tensor:
    """What a localisation net with ``loc_size`` sees: ``x`` resized to ``loc_size``,
    anti-aliased (images: :func:`torch.nn.functional.interpolate` bilinear with
    ``antialias=True``; volumes: trilinear where it enlarges, the area average where it
    shrinks); ``x`` itself when ``loc_size`` is None or its own size."""
    if loc_size is None or tuple(x.shape[2:]) == tuple(loc_size):
        return x
    if x.dim() == 4:
        return F.interpolate(x, size=loc_size, mode="bilinear", align_corners=False,
                             antialias=True)
    shrinks = any(s < n for s, n in zip(loc_size, x.shape[2:]))
    return F.interpolate(x, size=loc_size, mode="area" if shrinks else "trilinear")


def regression_head(localization: nn.Module, identity: torch.Tensor,
                    loc_features: int | None = None) -> nn.Linear:
    """A linear head from the localisation features to parameters, initialised to the
    transform ``identity`` (a lazy layer when the feature size is not known)."""
    features = loc_features or getattr(localization, "out_features", None)
    if features is None:
        return _LazyIdentityHead(identity)
    head = nn.Linear(int(features), identity.numel())
    _init_identity(head, identity)
    return head


def _init_identity(linear: nn.Linear, identity: torch.Tensor) -> None:
    """Zero weights and identity bias: the untrained transformer is the identity (paper, A.1)."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(identity)


class _LazyIdentityHead(nn.LazyLinear):
    """A LazyLinear that initialises to the identity transform once its size is known."""

    cls_to_become = None  # keep this class, so reset_parameters stays ours

    def __init__(self, identity: torch.Tensor):
        super().__init__(identity.numel())
        self.register_buffer("_identity", identity.clone(), persistent=False)

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _init_identity(self, self._identity)


class TransformerModule(nn.Module):
    """Base of the modules that predict a transform and warp by it: :class:`SpatialTransformer`,
    :class:`~torchstn.ParallelTransformer` and :class:`~torchstn.RecurrentTransformer`.

    :func:`find_transformers` finds them by this type; :meth:`members` names the
    transformers a module is made of, which are not listed again.
    """

    def members(self) -> list[nn.Module]:
        return []


class SpatialTransformer(TransformerModule):
    """Spatial transformer: localisation net -> grid generator -> sampler (paper, Fig. 2).

    ``forward(x)`` runs ``localization(x)`` to a feature vector, a linear regression
    head to the family's parameters, and :func:`torchstn.warp` of ``x`` by them. The head
    starts with zero weights and the family's identity as bias, so the untrained module
    returns its input unchanged (resampled to ``out_size`` if that differs).

    Convention: parameters map normalised output coordinates to input coordinates, as in
    :func:`torchstn.warp`.

    Args:
        localization: any ``nn.Module`` mapping the input ``(N, C, ...)`` to features
            ``(N, F)`` (extra dimensions are flattened). ``None``: a
            :class:`LocalizationNet` on ``in_channels`` channels.
        transform: family name (see :func:`torchstn.list_transforms`) or a built
            :class:`~torchstn.transforms.Transform` (e.g. ``get_transform("tps",
            grid_size=3)``). ``affine3d`` works on volumes ``(N, C, D, H, W)``.
        out_size: spatial output size (``(H, W)``, or ``(D, H, W)`` in 3-D); default: the
            input's. The paper downsamples by 2 for RTS and TC MNIST.
        mode, padding_mode, align_corners: as in :func:`torchstn.sample`.
        antialias: average the input over each output pixel's footprint where the warp
            shrinks it (see :func:`torchstn.sample`): for outputs smaller than the region
            they read.
        loc_size: spatial size of the copy of the input the localisation net sees (a
            glimpse transformer: localise on a small copy, sample the output from the
            full-resolution input; see :func:`localization_view`). Default: the input.
        in_channels: input channels; required when ``localization`` is ``None``.
        loc_features: size F of the features. Default: ``localization.out_features`` if
            it has that attribute, else inferred on the first forward (a lazy layer: run
            one batch before building the optimizer).
        backend: as in :func:`torchstn.warp`.

    Shape:
        ``x: (N, C, H, W)`` -> ``(N, C, *out_size)``; with ``return_params=True`` also the
        parameters ``(N, transform.num_params)``.

    Example:
        >>> stn = SpatialTransformer(None, "affine", in_channels=3, out_size=(16, 16))
        >>> stn(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        localization: nn.Module | None,
        transform: str | Transform = "affine",
        *,
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
        self.transform = resolve_transform(transform)
        check_choice("mode", mode, MODES)
        check_choice("padding_mode", padding_mode, PADDING_MODES)
        if out_size is not None:
            out_size = check_spatial_size("out_size", out_size, self.transform.ndim)
        self.loc_size = None if loc_size is None else check_spatial_size(
            "loc_size", loc_size, self.transform.ndim)
        self.antialias = check_antialias(antialias, self.transform)
        if localization is None:
            if in_channels is None:
                raise ValueError("in_channels is required when localization is None")
            localization = LocalizationNet(in_channels, ndim=self.transform.ndim)
        elif not isinstance(localization, nn.Module):
            raise TypeError(
                f"localization must be an nn.Module or None, got {type(localization).__name__}"
            )
        self.localization = localization
        self.out_size = out_size
        self.mode, self.padding_mode = mode, padding_mode
        self.align_corners = bool(align_corners)
        self.backend = check_choice("backend", backend, ["auto", *list_backends()])
        self.head = regression_head(localization, self.transform.identity(), loc_features)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("antialias", self.antialias),
                                                      ("loc_size", self.loc_size)) if v)
        return (f"transform={self.transform!r}, out_size={self.out_size}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}"
                + extra)

    def parameters_of(self, x: torch.Tensor) -> torch.Tensor:
        """The transform parameters ``(N, num_params)`` predicted for ``x``."""
        x = check_input(x, ranks=(self.transform.ndim + 2,))
        return self.parameters_of_view(localization_view(x, self.loc_size))

    def parameters_of_view(self, seen: torch.Tensor) -> torch.Tensor:
        """The parameters predicted from what the localisation net sees (the input, or
        its copy at ``loc_size``)."""
        return self.head(localize(self.localization, self.head, seen))

    def warp(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``x`` warped by ``params`` with this module's sampling options."""
        return warp(x, params, self.transform, out_size=self.out_size, mode=self.mode,
                    padding_mode=self.padding_mode, align_corners=self.align_corners,
                    antialias=self.antialias, backend=self.backend)

    def forward(self, x: torch.Tensor, return_params: bool = False):
        params = self.parameters_of(x)
        out = self.warp(x, params)
        return (out, params) if return_params else out


def find_transformers(model: nn.Module) -> list[TransformerModule]:
    """Every transformer module inside ``model``, in ``model.modules()`` order.

    Found by type (:class:`TransformerModule`), not by attribute name, so it works for any
    model: one transformer in front of a classifier, several in parallel, one before each
    of several layers, or a model wrapped by ``DistributedDataParallel`` or
    ``torch.compile``. A :class:`~torchstn.ParallelTransformer` is listed once, not with
    its K members. A transformer nested inside another transformer's localisation net is
    listed after its parent.

    Example:
        >>> model = nn.Sequential(SpatialTransformer(None, "affine", in_channels=1),
        ...                       nn.Conv2d(1, 4, 3),
        ...                       SpatialTransformer(None, "translation", in_channels=4))
        >>> [t.transform.name for t in find_transformers(model)]
        ['affine', 'translation']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found = [m for m in model.modules() if isinstance(m, TransformerModule)]
    members = {id(member) for m in found for member in m.members()}
    return [m for m in found if id(m) not in members]
