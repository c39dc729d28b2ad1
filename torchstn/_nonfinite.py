"""The non-finite rule of every warp, in one place.

An image whose transform parameters (or matrix) hold a NaN or inf entry is warped as the
identity and every value of its output is NaN; the other images of the batch are
unaffected, and its gradients are zero. A diverging localisation network then shows up in
the loss rather than as a plausible-looking image, and no sampler ever sees a NaN
coordinate (samplers disagree on what one reads, and it leaks NaN into gradients even
where the loss does not depend on it). Written in tensor operations without a
data-dependent branch: the same graph for every value, so warps compile and export whole.
The reference path (:func:`torchstn.warp` with ``backend="torch"``), the reference
decomposition of the fused operators and both fused operators use these functions.
"""

from __future__ import annotations

import torch

__all__ = ["finite_rows", "identity_where_nonfinite", "nan_where"]


def finite_rows(values: torch.Tensor) -> torch.Tensor:
    """``(N,)``: whether every entry of each image's ``values[n]`` is finite."""
    return torch.isfinite(values).flatten(1).all(1)


def identity_where_nonfinite(values: torch.Tensor,
                             identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` with the rows of images that hold a non-finite entry replaced by
    ``identity`` (broadcast to a row), and the mask of finite rows ``(N,)``."""
    finite = finite_rows(values)
    shape = (-1,) + (1,) * (values.dim() - 1)
    return torch.where(finite.view(shape), values, identity.to(values.dtype)), finite


def nan_where(out: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    """Every value of ``out`` NaN for the images whose ``finite`` is False."""
    shape = (-1,) + (1,) * (out.dim() - 1)
    return torch.where(finite.view(shape), out, torch.full_like(out, float("nan")))
