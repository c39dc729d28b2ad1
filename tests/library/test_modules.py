import re

import pytest
import torch
from helpers import smooth_image
from torch import nn

import torchstn as ts

FAMILIES_2D = [n for n in ts.list_transforms() if ts.get_transform(n).ndim == 2]


@pytest.mark.parametrize("name", FAMILIES_2D)
def test_untrained_module_is_the_identity(name):
    x = torch.rand(3, 2, 8, 10)
    stn = ts.SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(160, 12), nn.Tanh()), name)
    out, params = stn(x, return_params=True)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(params, stn.transform.identity().expand(3, -1))


def test_out_size_resamples_with_the_identity_grid():
    x = torch.rand(2, 3, 12, 12)
    stn = ts.SpatialTransformer(None, "affine", in_channels=3, out_size=(6, 5))
    out = stn(x)
    grid = ts.identity_grid((2, 3, 6, 5))
    torch.testing.assert_close(out, ts.sample(x, grid), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3, 7])
@pytest.mark.parametrize("hw", [(1, 1), (5, 9), (28, 28)])
def test_default_localization_any_channels_and_size(channels, hw):
    x = torch.rand(2, channels, *hw)
    stn = ts.SpatialTransformer(None, "similarity", in_channels=channels)
    assert stn(x).shape == x.shape
    torch.testing.assert_close(stn(x), x, atol=1e-5, rtol=0)


def test_inside_a_network_on_feature_maps_gradients_reach_everything():
    stn = ts.SpatialTransformer(None, "projective", in_channels=8, out_size=(6, 6))
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), stn, nn.Conv2d(8, 4, 3),
                        nn.Flatten(), nn.Linear(64, 10))
    loss = net(torch.rand(4, 3, 12, 12)).logsumexp(1).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # The regression head's weight gets a gradient although it starts at zero.
    assert stn.head.weight.grad.abs().sum() > 0


def test_3d_affine_transformer():
    x = torch.rand(2, 2, 6, 7, 8)
    stn = ts.SpatialTransformer(None, "affine3d", in_channels=2, out_size=(3, 4, 5))
    assert isinstance(stn.localization.features[0], nn.Conv3d)
    out = stn(x)
    assert out.shape == (2, 2, 3, 4, 5)
    torch.testing.assert_close(out, ts.sample(x, ts.identity_grid((2, 2, 3, 4, 5))), atol=1e-6,
                               rtol=0)
    out.sum().backward()


def test_lazy_head_is_identity_and_trains_with_an_early_optimizer():
    stn = ts.SpatialTransformer(nn.Flatten(), "attention")
    opt = torch.optim.SGD(stn.parameters(), lr=0.1)  # built before the head knows its size
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(stn(x), x, atol=1e-6, rtol=0)
    assert stn.head.weight.shape == (3, 16)
    loss = (stn(x) - x.flip(-1)).pow(2).mean()
    loss.backward()
    before = stn.head.bias.detach().clone()
    opt.step()
    assert not torch.equal(stn.head.bias, before)
    state = stn.state_dict()
    again = ts.SpatialTransformer(nn.Flatten(), "attention", loc_features=16)
    again.load_state_dict(state)
    torch.testing.assert_close(again(x), stn(x))


def test_module_errors():
    with pytest.raises(ValueError, match="in_channels is required when localization is None"):
        ts.SpatialTransformer(None, "affine")
    with pytest.raises(ValueError, match=r"out_size must be 2 positive ints \(H, W\), got \(4,\)"):
        ts.SpatialTransformer(nn.Flatten(), "affine", out_size=(4,))
    with pytest.raises(ValueError, match="mode must be one of .* got 'cubic'"):
        ts.SpatialTransformer(nn.Flatten(), "affine", mode="cubic")
    with pytest.raises(TypeError, match="localization must be an nn.Module or None, got function"):
        ts.SpatialTransformer(lambda x: x, "affine")
    stn = ts.SpatialTransformer(nn.Flatten(0), "affine", loc_features=32)
    with pytest.raises(ValueError, match=r"localization must return a tensor \(N, F\) with N = 2"):
        stn(torch.rand(2, 1, 4, 4))
    stn = ts.SpatialTransformer(nn.Flatten(), "affine", loc_features=10)
    with pytest.raises(ValueError, match="localization returned 16 features per image but the regression head expects loc_features = 10"):
        stn(torch.rand(2, 1, 4, 4))
    stn = ts.SpatialTransformer(None, "affine", in_channels=3)
    with pytest.raises(ValueError, match="input has 1 channels but the default localization net was built for in_channels = 3"):
        stn(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {['auto', *ts.list_backends()]}, got 'cuda'")):
        ts.SpatialTransformer(nn.Flatten(), "affine", backend="cuda")
    stn = ts.SpatialTransformer(nn.Flatten(), "affine3d", loc_features=16)
    with pytest.raises(ValueError, match=r"input must be \(N, C, D, H, W\), got shape \(2, 1, 4, 4\)"):
        stn(torch.rand(2, 1, 4, 4))


def test_learns_to_undo_a_known_translation():
    """An STN trained to map shifted images back onto the originals recovers the shift."""
    torch.manual_seed(0)
    target = smooth_image(64, 1, 24, 24, dtype=torch.float32)
    shift = torch.tensor([0.3, -0.2])  # normalised units: 3.6 and -2.4 pixels
    shifted = ts.warp(target, shift.expand(64, 2), "translation", padding_mode="border")
    loc = nn.Sequential(nn.Flatten(), nn.Linear(24 * 24, 16), nn.Tanh())
    stn = ts.SpatialTransformer(loc, "translation", padding_mode="border", loc_features=16)
    opt = torch.optim.Adam(stn.parameters(), lr=0.02)
    centre = (slice(None), slice(None), slice(6, 18), slice(6, 18))

    def loss_fn():
        return (stn(shifted) - target)[centre].pow(2).mean()

    initial = loss_fn().item()
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    final = loss_fn().item()
    print(f"loss {initial:.3g} -> {final:.3g}")
    assert final < initial / 100, (initial, final)
    # Undoing "read at p + shift" means reading at p - shift.
    params = stn(shifted, return_params=True)[1]
    torch.testing.assert_close(params.mean(0), -shift, atol=0.02, rtol=0)
