import math

import pytest
import torch

import torchstn as ts
from torchstn.experiments.data import load_idx_dataset
from torchstn.experiments.data.distortions import distort
from torchstn.experiments.data.mnist import DistortedMNIST
from torchstn.experiments.reports.poses import matrix_pose, undo_statistics


def test_matrix_pose_reads_rotation_and_scale():
    angles = torch.tensor([0.3, -2.0, 3.0, 0.0], dtype=torch.float64)
    scales = torch.tensor([1.0, 0.5, 2.0, 1.3], dtype=torch.float64)
    params = torch.stack([angles, scales.log(), torch.zeros(4, dtype=torch.float64),
                          torch.zeros(4, dtype=torch.float64)], 1)
    m = ts.get_transform("similarity").matrix(params)
    angle, scale = matrix_pose(m)
    assert torch.allclose(angle, angles) and torch.allclose(scale, scales)
    # a shear keeps the determinant: its closest similarity has no rotation here
    sheared = torch.tensor([[[1.0, 0.4, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    a, s = matrix_pose(sheared)
    assert float(s) == pytest.approx(1.0) and float(a) == pytest.approx(-math.atan(0.2))
    with pytest.raises(ValueError, match=r"matrix must be \(N, 3, 3\) or \(N, 2, 3\), got "):
        matrix_pose(torch.zeros(2, 2, 2))


def test_the_rotation_that_undoes_a_distortion_is_its_negative(data_dir):
    """The convention undo_statistics relies on, with the library's own warps."""
    digits = load_idx_dataset("mnist", "test", data_dir)[0][:16]
    img, info = distort(digits, "r", torch.Generator().manual_seed(0))
    zero = torch.zeros(16)

    def back(b):
        out = ts.warp(img, torch.stack([b.float(), zero, zero], 1), "rotation")
        return (out - digits.unsqueeze(1) / 255)[..., 6:22, 6:22].abs().mean()

    assert back(-info["angle"]) < 0.3 * back(info["angle"])
    stats = undo_statistics(-info["angle"], info["angle"])
    assert stats["correlation"] == pytest.approx(1.0) and stats["slope"] == pytest.approx(1.0)
    assert stats["residual_median_deg"] == pytest.approx(0.0, abs=1e-9)
    ignored = undo_statistics(torch.zeros(16, dtype=torch.float64), info["angle"])
    assert ignored["slope"] == pytest.approx(0.0)
    drawn = info["angle"].abs()
    assert ignored["residual_median_deg"] == pytest.approx(
        float(torch.rad2deg(drawn).median()))
    # half undone; a turn of 360 degrees more moves neither the slope nor the residual
    half = undo_statistics(-info["angle"] / 2 + 2 * math.pi, info["angle"])
    assert half["slope"] == pytest.approx(0.5)
    assert half["residual_median_deg"] == pytest.approx(
        float(torch.rad2deg(drawn / 2).median()))
    with pytest.raises(ValueError, match="same N >= 2 images"):
        undo_statistics(torch.zeros(3), torch.zeros(4))


def test_test_parameters_are_those_the_test_set_was_drawn_with(data_dir):
    data = DistortedMNIST("mnist", "r", data_dir=data_dir, test_size=1500)
    angles = data.test_parameters()["angle"]
    assert angles.shape == (1500,)
    # the first chunk of 1000 again, alone
    x, info = distort(data.test_x[:1000], "r", torch.Generator().manual_seed(2015),
                      dtype=torch.float64)
    assert torch.equal(info["angle"], angles[:1000])
    assert torch.equal(x.mul(255).round().to(torch.uint8), data.test_set()[0][:1000])
