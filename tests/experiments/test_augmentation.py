import json

import pytest

from torchstn.experiments.reports import augmentation as aug


def test_cells_differ_only_in_what_the_training_set_shows():
    base = aug.augmentation_base(epochs=2)
    fresh = aug.augmentation_cell(base, "rts", "fresh", "st-cnn-affine")
    assert not fresh.task.fixed_distortions and fresh.task.train_distortion is None
    assert fresh.task.st_downsample and fresh.optim.optimizer == "adamw"  # Table 1's
    fixed = aug.augmentation_cell(base, "rts", "fixed", "st-cnn-affine")
    assert fixed.task.fixed_distortions and fixed.train.epochs == 2
    small = aug.augmentation_cell(base, "r", "fixed-6k", "cnn")
    assert (small.task.train_size, small.train.epochs, small.task.fixed_distortions) == (
        6000, 20, True)
    assert not small.task.st_downsample  # r: the Table 1 model at full size
    assert aug.augmentation_cell(base, "rts", "narrow", "cnn").task.train_distortion == "rts15"
    assert aug.augmentation_cell(base, "r", "narrow", "cnn").task.train_distortion == "r15"
    assert aug.augmentation_cell(base, "r", "upright", "cnn").task.train_distortion == "none"
    with pytest.raises(ValueError, match=r"protocol 'upright' has no cell on 'rts'"):
        aug.augmentation_cell(base, "rts", "upright", "cnn")
    with pytest.raises(ValueError, match=r"protocol must be one of \['fresh', .*got 'x'"):
        aug.augmentation_cell(base, "r", "x", "cnn")


def test_reproduce_augmentation_runs_the_grid_and_writes_the_table(data_dir, tmp_path):
    from torchstn.experiments.cli import main

    out = tmp_path / "aug"  # also: the ST model's poses, computed once and cached
    assert main(["reproduce", "augmentation", "--distortions", "r", "--protocols", "fixed",
                 "upright", "fixed-6k", "--models", "cnn", "st-cnn-affine", "--epochs", "1",
                 "--train-size",
                 "100", "--test-size", "50", "--batch-size", "50", "--data-dir",
                 str(data_dir), "--out", str(out), "--no-progress"]) == 0
    table = (out / "augmentation.md").read_text()
    for protocol in ("fixed", "upright", "fixed-6k"):
        run = out / "r" / protocol / "cnn" / "seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        st = out / "r" / protocol / "st-cnn-affine" / "seed0"
        st_error = json.loads((st / "metrics.json").read_text())["test_error"]
        poses = json.loads((st / "poses.json").read_text())
        assert f"| {protocol} | {metrics['test_error']:.2f} | {st_error:.2f} | " \
               f"{poses['slope']:.2f} |" in table
        assert -1 <= poses["correlation"] <= 1 and poses["mean_scale"] > 0
        assert not (run / "poses.json").exists()  # no transformer, no poses
        assert len(poses["drawn_deg"]) == len(poses["predicted_deg"]) == 50  # test_size
    assert (out / "rotations-r.png").read_bytes()[:4] == b"\x89PNG"
    small = json.loads((out / "r" / "fixed-6k" / "cnn" / "seed0" / "config.json").read_text())
    assert (small["task"]["train_size"], small["train"]["epochs"]) == (10, 10)
    upright = json.loads((out / "r" / "upright" / "cnn" / "seed0" / "config.json").read_text())
    assert upright["task"]["train_distortion"] == "none"
    assert "1 epochs of 100 digits, 10 of 10 for the -6k protocols" in table
    with pytest.raises(ValueError, match=r"protocols must be among \['fresh'"):
        aug.run_augmentation(out, protocols=["x"], data_dir=data_dir)
