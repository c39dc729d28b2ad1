import pytest
import torch

from torchstn.experiments.engine import count_parameters
from torchstn.experiments.models import build_model, list_models

SIZES = [(28, False), (42, True), (60, True)]


def test_registry():
    assert list_models() == ["fcn", "cnn", "st-fcn-affine", "st-cnn-affine", "st-fcn-projective",
                             "st-cnn-projective", "st-fcn-tps", "st-cnn-tps"]
    with pytest.raises(ValueError, match=r"model must be one of \['fcn', .*\], got 'resnet'"):
        build_model("resnet", 28)


@pytest.mark.parametrize("size,downsample", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, size, downsample):
    model = build_model(name, size, st_downsample=downsample)
    x = torch.rand(3, 1, size, size)
    logits = model(x)
    assert logits.shape == (3, 10)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", [m for m in list_models() if m.startswith("st-")])
def test_st_models_start_as_identity_and_downsample(name):
    model = build_model(name, 42, st_downsample=True)
    x = torch.rand(2, 1, 42, 42)
    out, params = model.stn(x, return_params=True)
    assert out.shape == (2, 1, 21, 21)
    torch.testing.assert_close(params, model.stn.transform.identity().expand(2, -1))
    family = name.rsplit("-", 1)[1]
    assert model.stn.transform.name == family
    if family == "tps":
        assert model.stn.transform.num_params == 32  # 16 control points


def test_paper_architecture_details():
    cnn = build_model("cnn", 28)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(9, 9), (7, 7)]
    st = build_model("st-cnn-affine", 28)
    loc = st.stn.localization
    assert isinstance(loc[0], torch.nn.MaxPool2d)  # downsample by 2 first
    loc_convs = [m for m in loc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.out_channels) for c in loc_convs] == [((5, 5), 20)] * 2
    assert st.stn.head.in_features == 20
    fc_loc = build_model("st-fcn-affine", 28).stn.localization
    widths = [m.out_features for m in fc_loc.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 32, 32]


def test_parameter_counts_are_comparable():
    counts = [count_parameters(build_model(m, 28)) for m in list_models()]
    assert max(counts) / min(counts) < 1.3
