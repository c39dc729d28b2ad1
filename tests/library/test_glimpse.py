"""Glimpse transformers: the localisation net sees a small anti-aliased copy (loc_size),
the sampler reads the full-resolution input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchstn as ts
from torchstn.modules import localization_view


class Spy(nn.Module):
    """A localisation net that records the shape and values of what it sees."""

    out_features = 8

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 8)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(x.mean((2, 3)))


def _params(stn, seen):
    return stn.head(stn.localization.fc(seen.mean((2, 3))))


def test_spatial_transformer_localises_on_the_copy_and_samples_the_original():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 80)
    stn = ts.SpatialTransformer(Spy(), "attention", out_size=(12, 10), loc_size=(24, 20),
                                antialias=True)
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.1)  # a non-identity transform
    out, params = stn(x, return_params=True)
    (seen,) = stn.localization.seen
    expected_view = F.interpolate(x, size=(24, 20), mode="bilinear", antialias=True)
    torch.testing.assert_close(seen, expected_view)
    torch.testing.assert_close(params, _params(stn, expected_view))
    # The output is read from the full-resolution input, anti-aliased.
    full = ts.warp(x, params, "attention", out_size=(12, 10), antialias=True)
    torch.testing.assert_close(out, full)
    small = ts.warp(expected_view, params, "attention", out_size=(12, 10), antialias=True)
    assert (out - small).abs().max() > 1e-3  # not a warp of the small copy
    assert "loc_size=(24, 20)" in repr(stn) and "antialias=True" in repr(stn)


def test_untrained_glimpse_of_whole_image_is_its_area_average():
    x = torch.randn(2, 3, 64, 64)
    stn = ts.SpatialTransformer(None, "affine", in_channels=3, out_size=(16, 16),
                                loc_size=(32, 32), antialias=True)
    torch.testing.assert_close(stn(x), F.avg_pool2d(x, 4))
    plain = ts.SpatialTransformer(None, "affine", in_channels=3, out_size=(16, 16))
    assert (plain(x) - F.avg_pool2d(x, 4)).abs().max() > 0.1


@pytest.mark.parametrize("shared", [False, True])
def test_parallel_transformer_makes_the_copy_once(shared, monkeypatch):
    calls = []
    real = F.interpolate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "interpolate", counting)
    pt = ts.ParallelTransformer(3, "attention", in_channels=3, out_size=(8, 8),
                                loc_size=(16, 16), antialias=True, init="tile",
                                shared_localization=shared)
    x = torch.randn(2, 3, 64, 64)
    out = pt(x)
    assert out.shape == (2, 9, 8, 8)
    assert calls == [(16, 16)]
    # Each transformer's output is its own warp of the full input.
    params = pt.parameters_of(x)
    for i, p in enumerate(params):
        torch.testing.assert_close(
            out[:, 3 * i: 3 * i + 3],
            ts.warp(x, p, "attention", out_size=(8, 8), antialias=True))


def test_from_transformers_keeps_each_loc_size():
    a = ts.SpatialTransformer(Spy(), "attention", loc_size=(8, 8), out_size=(4, 4))
    b = ts.SpatialTransformer(Spy(), "attention", loc_size=(16, 16), out_size=(4, 4))
    pt = ts.ParallelTransformer.from_transformers([a, b])
    pt(torch.randn(1, 3, 32, 32))
    assert a.localization.seen[0].shape[2:] == (8, 8)
    assert b.localization.seen[0].shape[2:] == (16, 16)


def test_volumes_and_errors():
    v = torch.randn(1, 2, 8, 8, 8)
    torch.testing.assert_close(localization_view(v, (4, 4, 4)), F.avg_pool3d(v, 2))
    assert localization_view(v, (8, 8, 8)) is v
    with pytest.raises(ValueError, match="loc_size must be 2 positive ints"):
        ts.SpatialTransformer(None, "affine", in_channels=1, loc_size=(0, 4))
    with pytest.raises(ValueError, match="antialias supports the 2-D families"):
        ts.SpatialTransformer(None, "affine3d", in_channels=1, antialias=True)
    with pytest.raises(ValueError, match="antialias supports the 2-D families"):
        ts.ParallelTransformer(2, "affine3d", in_channels=1, antialias=True)
