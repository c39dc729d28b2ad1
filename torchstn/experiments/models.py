"""The paper's distorted-MNIST models (Table 1 rows, appendix A.1), in a registry.

ReLU everywhere, softmax classifiers (the logits are returned; the loss applies the
softmax):

- ``fcn``: two hidden fully connected layers of 128 units, then the classifier.
- ``cnn``: conv 9x9 (32 filters) -> max-pool 2 -> conv 7x7 (64 filters) -> max-pool 2 ->
  fully connected classifier. The convolutions are zero-padded to keep their input size,
  so the same net also runs on the 21x21 outputs of a downsampling transformer.
- ``st-fcn-<family>``: a spatial transformer whose localisation net is three fully
  connected layers of 32 units, in front of the FCN.
- ``st-cnn-<family>``: a spatial transformer whose localisation net downsamples its input
  by 2 (max-pool), then two 5x5 convolutions of 20 filters with a 2x2 max-pool between
  them, then a fully connected layer of 20, in front of the CNN.

The families are ``affine``, ``projective`` and ``tps`` (16 control points). For the
``rts`` and ``tc`` data the transformer output is downsampled by 2 (``st_downsample``).
The regression head of every transformer starts at the identity transform.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from torchstn._registry import Registry
from torchstn.modules import SpatialTransformer
from torchstn.multi import ParallelTransformer

from .data.addition import NUM_SUMS
from .data.mnist3d import SLAB
from .data.svhn import MAX_DIGITS, NO_DIGIT

__all__ = ["ADDITION_MODELS", "HOUSE_MODELS", "MNIST3D_MODELS", "MODELS", "HouseNumberNet",
           "Projection", "STClassifier", "build_addition_model", "build_house_model",
           "build_model", "list_models"]

#: Table 1 models by name; each entry builds ``(in_size, *, st_downsample, num_classes)``.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def fcn(in_size: int, num_classes: int = 10, hidden: int = 128,
        in_channels: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * in_size * in_size, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


def cnn(in_size: int, num_classes: int = 10, channels=(32, 64),
        in_channels: int = 1, hidden: int = 0) -> nn.Sequential:
    """9x9 and 7x7 convolutions, each followed by a max-pool of 2, then a linear classifier
    (with ``hidden`` > 0: a hidden fully connected layer of that width before it)."""
    c1, c2 = channels
    side = in_size // 2 // 2
    flat = c2 * side * side
    top = ([nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)] if hidden
           else [nn.Linear(flat, num_classes)])
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 9, padding=4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), *top,
    )


def fc_localization(in_size: int, width: int = 32,
                    in_channels: int = 1) -> tuple[nn.Sequential, int]:
    """Three fully connected layers of ``width``; returns the net and its feature size."""
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * in_size * in_size, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
    )
    return net, width


def conv_localization(in_size: int, filters: int = 20,
                      width: int = 20) -> tuple[nn.Sequential, int]:
    """Max-pool 2, two 5x5 convolutions around a max-pool, a layer of ``width``; returns
    the net and its feature size."""
    side = ((in_size // 2 - 4) // 2) - 4
    net = nn.Sequential(
        nn.MaxPool2d(2), nn.Conv2d(1, filters, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, 5), nn.ReLU(),
        nn.Flatten(), nn.Linear(filters * side * side, width), nn.ReLU(),
    )
    return net, width


class STClassifier(nn.Module):
    """A spatial transformer followed by a classifier; ``pool``: average-pool the
    transformer's output by 2 first."""

    def __init__(self, stn: nn.Module, classifier: nn.Module, *, pool: bool = False):
        super().__init__()
        self.stn = stn
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()  # no weights either way
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stn(x)))


@MODELS.register("fcn")
def _fcn(in_size, *, st_downsample=False, st_pool=False, num_classes=10):
    return fcn(in_size, num_classes)


@MODELS.register("cnn")
def _cnn(in_size, *, st_downsample=False, st_pool=False, num_classes=10):
    return cnn(in_size, num_classes)


def _st_model(loc: Callable, head: Callable, family: str, in_size: int, *,
              st_downsample: bool = False, st_pool: bool = False,
              num_classes: int = 10) -> STClassifier:
    half = in_size // 2 if st_downsample else in_size
    # st_pool: sample at full size, then average-pool by 2 (the paper's appendix, as our
    # notes read it); else sample at half size directly.
    out = in_size if st_downsample and st_pool else half
    localization, features = loc(in_size)
    stn = SpatialTransformer(localization, family, out_size=(out, out), loc_features=features)
    return STClassifier(stn, head(half, num_classes), pool=st_downsample and st_pool)


MODELS.add("st-fcn-affine", partial(_st_model, fc_localization, fcn, "affine"))
MODELS.add("st-cnn-affine", partial(_st_model, conv_localization, cnn, "affine"))
MODELS.add("st-fcn-projective", partial(_st_model, fc_localization, fcn, "projective"))
MODELS.add("st-cnn-projective", partial(_st_model, conv_localization, cnn, "projective"))
MODELS.add("st-fcn-tps", partial(_st_model, fc_localization, fcn, "tps"))
MODELS.add("st-cnn-tps", partial(_st_model, conv_localization, cnn, "tps"))


def list_models() -> list[str]:
    return MODELS.names()


def build_model(name: str, in_size: int, *, st_downsample: bool = False,
                st_pool: bool = False, num_classes: int = 10) -> nn.Module:
    """Build model ``name`` for square inputs of side ``in_size``."""
    return MODELS.get(name)(in_size, st_downsample=st_downsample, st_pool=st_pool,
                            num_classes=num_classes)


# MNIST addition (appendix A.1): inputs (2, 42, 42), one digit per channel; 19 sums. The
# widths make the models about the same size, as the paper's are (`torchstn models`):
# FCN 471k parameters, CNN 414k, ST-FCN 412k-413k, 2xST-FCN 475k-477k.
#: MNIST-addition models by name; each entry builds ``(*, st_pool)``.
ADDITION_MODELS: Registry[Callable[..., nn.Module]] = Registry("addition model")
_ADD_SIZE, _ADD_CHANNELS = 42, 2


@ADDITION_MODELS.register("fcn")
def _add_fcn(*, st_pool=False):
    return fcn(_ADD_SIZE, NUM_SUMS, 128, in_channels=_ADD_CHANNELS)


@ADDITION_MODELS.register("cnn")
def _add_cnn(*, st_pool=False):
    # A hidden layer: a linear read-out of the pooled maps cannot form the sum of two
    # digits at independent places (without it: 36% training error after 64 epochs).
    return cnn(_ADD_SIZE, NUM_SUMS, (32, 64), in_channels=_ADD_CHANNELS, hidden=48)


def _add_st_fcn(family: str, k: int, *, st_pool: bool = False) -> STClassifier:
    """k transformers, each seeing both channels and warping both, to half size (sampled
    there, or at full size and average-pooled with ``st_pool``); their outputs
    concatenated (2k channels) into an FCN."""
    half = _ADD_SIZE // 2
    out = _ADD_SIZE if st_pool else half
    nets = [fc_localization(_ADD_SIZE, in_channels=_ADD_CHANNELS)[0] for _ in range(k)]
    stns = [SpatialTransformer(net, family, out_size=(out, out), loc_features=32)
            for net in nets]
    stn = stns[0] if k == 1 else ParallelTransformer.from_transformers(stns)
    hidden = 256 if k == 1 else 128
    head = fcn(half, NUM_SUMS, hidden, in_channels=_ADD_CHANNELS * k)
    return STClassifier(stn, head, pool=st_pool)


for _family in ("affine", "projective", "tps"):
    ADDITION_MODELS.add(f"st-fcn-{_family}", partial(_add_st_fcn, _family, 1))
    ADDITION_MODELS.add(f"2xst-fcn-{_family}", partial(_add_st_fcn, _family, 2))


def build_addition_model(name: str, *, st_pool: bool = False) -> nn.Module:
    """Build MNIST-addition model ``name`` (inputs ``(N, 2, 42, 42)``, 19 sums)."""
    return ADDITION_MODELS.get(name)(st_pool=st_pool)


# 3-D MNIST (appendix A.3): volumes (1, 60, 60, 60); the classifier sees a 2-D projection.
#: 3-D MNIST models by name; each entry builds ``(size)``.
MNIST3D_MODELS: Registry[Callable[..., nn.Module]] = Registry("3-D MNIST model")


class Projection(nn.Module):
    """A volume ``(N, C, D, H, W)`` summed along depth, divided by ``scale``: ``(N, C, H, W)``."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(2) / self.scale


def _proj_cnn(size: int = 60):
    """No transformer: the input volume projected along depth, average-pooled by 2, into
    the Table 1 CNN."""
    return nn.Sequential(Projection(SLAB), nn.AvgPool2d(2), cnn(size // 2))


def _st3d_cnn(size: int = 60):
    """An affine3d transformer (trilinear) resampling the volume at half resolution, its
    output projected along depth, into the Table 1 CNN. Localisation: max-pool 2, two 3-D
    convolutions (8 and 16 filters of 5x5x5) around a max-pool, average-pooled to 3x3x3,
    a layer of 32."""
    half = size // 2
    loc = nn.Sequential(
        nn.MaxPool3d(2), nn.Conv3d(1, 8, 5), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 5), nn.ReLU(), nn.AdaptiveAvgPool3d(3), nn.Flatten(),
        nn.Linear(16 * 27, 32), nn.ReLU(),
    )
    stn = SpatialTransformer(loc, "affine3d", out_size=(half, half, half), loc_features=32)
    # The output has half the voxels: a slab is SLAB / 2 of them deep.
    return STClassifier(stn, nn.Sequential(Projection(SLAB / 2), cnn(half)))


MNIST3D_MODELS.add("proj-cnn", _proj_cnn)
MNIST3D_MODELS.add("st3d-cnn", _st3d_cnn)


# House numbers (appendix A.5; Goodfellow et al. 2013): multi-digit recognition.
#: House-number models by name; each entry builds ``(in_size, *, in_channels, width)``.
HOUSE_MODELS: Registry[Callable[..., nn.Module]] = Registry("house-number model")
#: The baseline's convolutions (5x5, zero-padded) and, after each, whether a 2x2 max-pool
#: of stride 2 follows; then two fully connected layers.
HOUSE_CONVS = ((48, True), (64, False), (128, True), (160, False), (192, True),
               (192, False), (192, True), (192, False))
HOUSE_FC = 3072
#: Output logits: 5 for the length (1 to 5 digits), then 11 for each of the 5 digits
#: (0 to 9, and 10: no digit).
HOUSE_LENGTHS, HOUSE_CLASSES = MAX_DIGITS, NO_DIGIT + 1
HOUSE_OUTPUTS = HOUSE_LENGTHS + MAX_DIGITS * HOUSE_CLASSES


def _scaled(channels: int, width: float) -> int:
    return max(4, round(channels * width))


def _house_transformer(in_channels: int, side: int, width: float, *, conv: bool,
                       out_side: int | None = None) -> SpatialTransformer:
    """An affine transformer of a ``side`` x ``side`` input sampling ``out_side`` x
    ``out_side`` (default: ``side``). Localisation ``conv``:
    conv[32, 5x5]-maxpool-conv[32, 5x5]-fc[32]-fc[32] (Single); else fc[32]-fc[32] on the
    flattened feature map (Multi)."""
    c = _scaled(32, width)
    if conv:
        inner = (side - 4) // 2 - 4
        loc = nn.Sequential(nn.Conv2d(in_channels, c, 5), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(c, c, 5), nn.ReLU(), nn.Flatten(),
                            nn.Linear(c * inner * inner, c), nn.ReLU(), nn.Linear(c, c),
                            nn.ReLU())
    else:
        loc = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, c), nn.ReLU(),
                            nn.Linear(c, c), nn.ReLU())
    out_side = side if out_side is None else out_side
    return SpatialTransformer(loc, "affine", out_size=(out_side, out_side), loc_features=c)


#: The smallest output a house-number transformer may sample: the four 2x2 max-pools of
#: the classifier need 16 pixels a side.
HOUSE_MIN_SIDE = 16


class HouseNumberNet(nn.Module):
    """The baseline of A.5 with optional transformers; logits ``(N, 5 + 5 * 11)``.

    ``transformers``: ``"none"``, ``"single"`` (one on the input) or ``"multi"`` (one before
    each of the first four convolutions, on that layer's input). Dropout 0.5 after every
    hidden layer but the first convolution (never in a localisation net).

    ``st_size``: the side of the first transformer's output (default: its input's). The
    paper lets a transformer "downsample or oversample a feature map": at 128 px a first
    transformer reading the 108x108 crop and sampling 54x54 runs the classifier at the
    cost of the 64 px one, and loses no resolution where it zooms in by 2 or more.
    """

    def __init__(self, in_size: int = 54, *, in_channels: int = 3, width: float = 1.0,
                 transformers: str = "none", dropout: float = 0.5,
                 st_size: int | None = None):
        super().__init__()
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        if transformers not in ("none", "single", "multi"):
            raise ValueError(f"transformers must be none, single or multi, got "
                             f"{transformers!r}")
        if st_size is not None:
            if transformers == "none":
                raise ValueError("st_size needs a transformer: the model has none "
                                 "(transformers='none')")
            if (isinstance(st_size, bool) or not isinstance(st_size, int)
                    or not HOUSE_MIN_SIDE <= st_size <= in_size):
                raise ValueError(f"st_size must be an int from {HOUSE_MIN_SIDE} to the "
                                 f"input's side {in_size}, got {st_size!r}")
        layers: list[nn.Module] = []
        side, c_in = in_size, in_channels
        for i, (c, pool) in enumerate(HOUSE_CONVS):
            if (transformers == "single" and i == 0) or (transformers == "multi" and i < 4):
                out_side = st_size if i == 0 else None
                stn = _house_transformer(c_in, side, width, conv=transformers == "single",
                                         out_side=out_side)
                layers.append(stn)
                side = out_side or side
            c_out = _scaled(c, width)
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            if i > 0 and dropout:
                layers.append(nn.Dropout(dropout))
            c_in = c_out
        fc = _scaled(HOUSE_FC, width)
        layers += [nn.Flatten(), nn.Linear(c_in * side * side, fc), nn.ReLU(),
                   nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(dropout),
                   nn.Linear(fc, HOUSE_OUTPUTS)]
        self.net = nn.Sequential(*layers)
        # He initialisation of the ten ReLU layers (PyTorch's default scales each layer's
        # output variance by about 1/3: the signal fades through ten of them).
        stn_layers = {id(m) for t in layers if isinstance(t, SpatialTransformer)
                      for m in t.modules()}
        for m in self.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in stn_layers:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


for _name, _kind in (("cnn", "none"), ("st-cnn-single", "single"), ("st-cnn-multi", "multi")):
    HOUSE_MODELS.add(_name, partial(HouseNumberNet, transformers=_kind))


def build_house_model(name: str, in_size: int, *, in_channels: int = 3, width: float = 1.0,
                      dropout: float = 0.5, st_size: int | None = None) -> nn.Module:
    """Build house-number model ``name`` for ``(N, in_channels, in_size, in_size)`` inputs
    (``st_size``: the first transformer's output side, :class:`HouseNumberNet`)."""
    return HOUSE_MODELS.get(name)(in_size, in_channels=in_channels, width=width,
                                  dropout=dropout, st_size=st_size)
