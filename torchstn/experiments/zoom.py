"""Classifiers of large images with one classifier and different fronts: how the image
reaches the classifier's small input.

Fronts (:data:`FRONTS`):

- ``resize``: the whole image, downsampled to the classifier's input (anti-aliased:
  :func:`torch.nn.functional.interpolate` with ``antialias=True``);
- ``full``: the classifier on the full-resolution image (for scale: its time and
  memory);
- ``glimpse``: an attention transformer (scale and translation) localising on a
  ``loc_size`` copy and sampling the classifier's input from the full-resolution image,
  anti-aliased; it starts at the identity, i.e. as ``resize``;
- ``glimpse-plain``: the same, bilinear sampling without anti-aliasing;
- ``saliency``: the saliency sampler (:class:`torchstn.SaliencySampler`), which starts as
  ``resize``.
"""

from __future__ import annotations

from torch import nn

import torchstn
from torchstn.modules import localization_view

__all__ = ["FRONTS", "ZoomClassifier", "build_zoom_model", "small_cnn"]

FRONTS = ("resize", "full", "glimpse", "glimpse-plain", "saliency")


def small_cnn(in_channels: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU stages (the first three max-pooled by 2), global average pooling,
    a linear layer: works on any input size."""
    layers, c = [], in_channels
    for i, w in enumerate((width, 2 * width, 4 * width, 4 * width)):
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def _localization(in_channels: int, width: int = 16) -> nn.Sequential:
    """Three conv-BN-ReLU-pool stages, pooled to 4 x 4, fc to 128 features."""
    layers, c = [], in_channels
    for w in (width, 2 * width, 2 * width):
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c = w
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * c, 128),
                        nn.ReLU())
    net.out_features = 128
    return net


class _Resize(nn.Module):
    """The whole image at ``size``, anti-aliased (:func:`torchstn.modules.localization_view`)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x):
        return localization_view(x, self.size)


class ZoomClassifier(nn.Module):
    """``classifier(front(x))``; ``front`` is None for the full-resolution classifier."""

    def __init__(self, front: nn.Module | None, classifier: nn.Module, kind: str):
        super().__init__()
        self.front = front
        self.classifier = classifier
        self.kind = kind

    def view(self, x):
        """What the classifier sees."""
        return x if self.front is None else self.front(x)

    def forward(self, x, return_params: bool = False):
        """The logits; with ``return_params=True`` also the glimpse transformer's parameters
        (None for the other fronts), from the same localisation pass."""
        params = None
        if isinstance(self.front, torchstn.SpatialTransformer) and return_params:
            seen, params = self.front(x, return_params=True)
        else:
            seen = self.view(x)
        logits = self.classifier(seen)
        return (logits, params) if return_params else logits


def build_zoom_model(front: str, *, in_channels: int, num_classes: int,
                     input_size: int = 64, loc_size: int = 64, width: int = 32) -> ZoomClassifier:
    """The classifier of ``small_cnn(width)`` behind the ``front`` (see :data:`FRONTS`)."""
    if front not in FRONTS:
        raise ValueError(f"front must be one of {list(FRONTS)}, got {front!r}")
    size, loc = (input_size, input_size), (loc_size, loc_size)
    classifier = small_cnn(in_channels, num_classes, width)
    if front == "full":
        module = None
    elif front == "resize":
        module = _Resize(size)
    elif front in ("glimpse", "glimpse-plain"):
        module = torchstn.SpatialTransformer(_localization(in_channels), "attention",
                                             out_size=size, loc_size=loc,
                                             antialias=front == "glimpse")
    else:
        module = torchstn.SaliencySampler(None, in_channels=in_channels, out_size=size,
                                          loc_size=loc)
    return ZoomClassifier(module, classifier, front)
