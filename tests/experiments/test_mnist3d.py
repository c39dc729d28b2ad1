"""3-D MNIST: the rendered volumes against torchstn's own affine3d warp, the poses, the
models and the task."""

import pytest
import torch

import torchstn as ts
from torchstn.experiments import make_config, train
from torchstn.experiments.data.mnist3d import Mnist3D, draw_poses, render_volumes
from torchstn.experiments.models import MNIST3D_MODELS


def _digits(n=3, seed=0):
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [60, 32])
def test_rendered_volumes_equal_the_affine3d_warp_of_the_slab(size):
    d = _digits()
    slab = torch.zeros(3, 1, size, size, size, dtype=torch.float64)
    lo, mid = (size - 28) // 2, size // 2
    slab[:, 0, mid - 2 : mid + 2, lo : lo + 28, lo : lo + 28] = d.double()[:, None] / 255
    identity = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).double().expand(3, 3, 4)
    torch.testing.assert_close(render_volumes(d, identity, size, dtype=torch.float64), slab,
                               atol=1e-12, rtol=0)
    poses = draw_poses(3, torch.Generator().manual_seed(1), size)
    warped = ts.warp(slab, poses.reshape(3, 12), "affine3d", backend="torch")
    torch.testing.assert_close(render_volumes(d, poses, size, dtype=torch.float64), warped,
                               atol=1e-12, rtol=0)


def test_poses_are_rotations_and_bounded_shifts():
    poses = draw_poses(500, torch.Generator().manual_seed(2))
    r = poses[:, :, :3]
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64)
                               .expand(500, 3, 3), atol=1e-12, rtol=0)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500, dtype=torch.float64))
    shift = -(r.transpose(1, 2) @ poses[:, :, 3:])[..., 0] * 30  # voxels
    assert shift.abs().max() <= 8 + 1e-9 and shift.abs().max() > 6


def test_data_is_seeded_and_sharded(data_dir):
    data = Mnist3D(size=32, data_dir=data_dir, train_size=12, test_size=8, seed=4)
    (x, y), = list(data.train_batches(0, 12))
    assert x.shape == (12, 1, 32, 32, 32)
    assert torch.equal(y.sort().values, data.train_y[:12].sort().values)  # each digit once
    (x2, _), = list(data.train_batches(0, 12))
    assert torch.equal(x, x2)
    halves = [b for r in range(2) for b in data.train_batches(0, 12, rank=r, world=2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    tx, ty = data.test_set()
    assert tx.dtype == torch.uint8 and tx.shape == (8, 1, 32, 32, 32)
    assert torch.equal(Mnist3D(size=32, data_dir=data_dir, test_size=8).test_set()[0], tx)
    # Each volume holds the whole digit: its ink is the digit's, times the slab depth.
    ink = tx.double().sum((1, 2, 3, 4)) / 255
    torch.testing.assert_close(ink, 4 * data.test_x[:8].double().sum((1, 2)) / 255,
                               rtol=0.05, atol=0)


@pytest.mark.parametrize("name", MNIST3D_MODELS.names())
def test_models_classify_volumes(name):
    model = MNIST3D_MODELS.get(name)(32)
    assert model(torch.rand(2, 1, 32, 32, 32)).shape == (2, 10)


def test_the_transformer_starts_as_a_half_resolution_resampling():
    model = MNIST3D_MODELS.get("st3d-cnn")(32)
    x = torch.rand(2, 1, 32, 32, 32)
    expected = torch.nn.functional.interpolate(x, size=(16, 16, 16), mode="trilinear",
                                               align_corners=False)
    torch.testing.assert_close(model.stn(x), expected, atol=1e-5, rtol=0)


def test_the_task_trains(data_dir, tmp_path):
    cfg = make_config("mnist3d", model="st3d-cnn", size=32, epochs=1, train_size=64,
                      test_size=16, batch_size=32)
    metrics = train(cfg, tmp_path, data_dir=data_dir, progress=False)
    assert metrics["task"] == "mnist3d" and 0 <= metrics["test_error"] <= 100
    assert (tmp_path / "projections.png").is_file()


def test_reproduce_mnist3d_writes_both_rows(data_dir, tmp_path):
    from torchstn.experiments.reports import reproduce as rep

    base = rep.experiment_base("mnist3d", size=32, epochs=1, train_size=32, test_size=16,
                               batch_size=16)
    table = rep.run_rows("mnist3d", tmp_path, base=base, data_dir=data_dir, progress=False)
    count = sum(p.numel() for p in MNIST3D_MODELS.get("proj-cnn")(32).parameters())
    assert f"| proj-cnn | {count:,} |" in table and "| st3d-cnn |" in table
    assert (tmp_path / "mnist3d.md").read_text() == table
    assert (tmp_path / "st3d-cnn" / "seed0" / "metrics.json").is_file()


def test_channels_last_takes_the_3d_format_for_3d_convolutions():
    from torchstn.experiments.engine.loop import to_channels_last

    model = to_channels_last(MNIST3D_MODELS.get("st3d-cnn")(32))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert {type(m).__name__ for m in convs} == {"Conv2d", "Conv3d"}
    for m in convs:
        fmt = (torch.channels_last_3d if isinstance(m, torch.nn.Conv3d)
               else torch.channels_last)
        assert m.weight.is_contiguous(memory_format=fmt)
        if m.in_channels > 1:  # (with one input channel both layouts are the same)
            assert not m.weight.is_contiguous()
