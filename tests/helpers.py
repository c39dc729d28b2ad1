"""Test helpers shared by several test files."""

import re

import pytest
import torch

import torchstn as ts


def smooth_image(n, c, h, w, dtype=torch.float64):
    """Band-limited test images: sums of a few low-frequency sinusoids, values in [0, 1]."""
    y = torch.linspace(-1, 1, h, dtype=dtype).view(1, 1, h, 1)
    x = torch.linspace(-1, 1, w, dtype=dtype).view(1, 1, 1, w)
    f = torch.rand(n, c, 1, 1, 4, dtype=dtype) * 2 + 0.5
    img = (torch.sin(f[..., 0] * x + f[..., 1] * 3) * torch.cos(f[..., 2] * y + f[..., 3] * 3))
    return (img + 1) / 2


def smooth_volume(n, c, d, h, w, dtype=torch.float64):
    """Band-limited 3-D test volumes, values in [0, 1]."""
    z = torch.linspace(-1, 1, d, dtype=dtype).view(1, 1, d, 1, 1)
    img = smooth_image(n, c, h, w, dtype).unsqueeze(2)
    return img * (0.75 + 0.25 * torch.cos(1.5 * z))


def assert_fused_refusals(backend, x, p):
    """The errors every fused backend (warping.FusedMatrixBackend) gives when forced onto
    a warp it cannot run: unsupported mode, padding and family, each saying why."""
    cases = [
        (dict(mode="bicubic"), "it supports mode 'bilinear' and 'nearest', got 'bicubic'"),
        (dict(padding_mode="reflection"),
         "it supports padding_mode 'zeros' and 'border', got 'reflection'"),
    ]
    for kw, why in cases:
        with pytest.raises(ValueError,
                           match=re.escape(f"backend '{backend}' cannot run this warp: {why}")):
            ts.warp(x, p, "affine", backend=backend, **kw)
    tps = ts.get_transform("tps").identity()[None].to(x.device)
    with pytest.raises(ValueError, match="it supports the 2-D matrix families, got 'tps'"):
        ts.warp(x, tps, "tps", backend=backend)


def fused_and_reference(backend, x, p, family, g, **kw):
    """Output and gradients (input, params) for ``g`` of ``backend`` and of the reference
    path, in that order, each ``(out, grad_x, grad_params)``."""
    results = []
    for name in (backend, "torch"):
        xi = x.detach().clone().requires_grad_(True)
        pi = p.detach().clone().requires_grad_(True)
        out = ts.warp(xi, pi, family, backend=name, **kw)
        gx, gp = torch.autograd.grad(out, (xi, pi), g)
        results.append((out.detach(), gx, gp))
    return results
