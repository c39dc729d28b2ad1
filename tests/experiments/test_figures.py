import pytest
import torch
from torch import nn

import torchstn as ts
from torchstn.experiments.models import build_model
from torchstn.experiments.plots.figures import (
    capture_transformers,
    curves_figure,
    transformer_figure,
)


def _two_in_series():
    stn1 = ts.SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(144, 8)), "affine",
                                 loc_features=8, out_size=(10, 10))
    stn2 = ts.SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(4 * 64, 8)),
                                 "translation", loc_features=8)
    with torch.no_grad():  # move both off the identity, so their grids are not trivial
        stn1.head.bias.copy_(torch.tensor([0.8, 0.2, 0.1, -0.1, 0.9, 0.0]))
        stn2.head.bias.copy_(torch.tensor([0.2, -0.3]))
    return nn.Sequential(stn1, nn.Conv2d(1, 4, 3), stn2, nn.Flatten(), nn.Linear(256, 3))


def test_capture_records_every_transformer_in_order():
    model = _two_in_series()
    x = torch.rand(5, 1, 12, 12)
    recs = capture_transformers(model, x)
    assert [r["module"] for r in recs] == ts.find_transformers(model)
    assert recs[0]["input"].shape == (5, 1, 12, 12) and recs[0]["output"].shape == (5, 1, 10, 10)
    assert recs[1]["input"].shape == (5, 4, 8, 8) and recs[1]["output"].shape == (5, 4, 8, 8)
    # The recorded grid is the one the module sampled with: resampling gives its output.
    for r in recs:
        again = torch.nn.functional.grid_sample(r["input"], r["grid"], align_corners=False)
        torch.testing.assert_close(again, r["output"], atol=1e-5, rtol=0)
    assert model.training  # the model is left in the mode it was in


@pytest.mark.parametrize("shared", [False, True])
def test_capture_gives_each_parallel_member_and_the_recurrent_final_grid(shared):
    pt = ts.ParallelTransformer(3, "attention", in_channels=1, init="tile",
                                shared_localization=shared)
    rt = ts.RecurrentTransformer(None, "affine", 2, in_channels=3, out_size=(6, 6))
    with torch.no_grad():
        rt.heads[0].bias.copy_(torch.tensor([0.9, 0.1, 0.1, -0.1, 0.8, 0.0]))
    model = nn.Sequential(pt, rt)
    x = torch.rand(2, 1, 12, 12)
    recs = capture_transformers(model, x)
    assert [r["module"] for r in recs] == [pt, pt, pt, rt]
    inputs = [x, x, x, pt(x)]
    for r, inp in zip(recs, inputs):
        again = torch.nn.functional.grid_sample(inp, r["grid"], align_corners=False)
        torch.testing.assert_close(again, r["output"], atol=1e-5, rtol=0)
    assert recs[3]["output"].shape == (2, 3, 6, 6)


def test_figures_draw_every_transformer(tmp_path):
    path = transformer_figure(_two_in_series(), torch.rand(4, 1, 12, 12), tmp_path / "t.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    plain = transformer_figure(build_model("cnn", 28), torch.rand(3, 1, 28, 28),
                               tmp_path / "p.png")  # no transformer: the inputs only
    assert plain.is_file()
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "train_error": 5 / e,
                "test_error": 6 / e} for e in (1, 2, 3)]
    assert curves_figure(history, tmp_path / "c.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "p.png", "t.png"]
