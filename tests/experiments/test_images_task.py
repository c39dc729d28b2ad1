"""--task images: a folder of class subfolders of PNG/JPEG files, written here with Pillow."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn.experiments.cli import main
from torchstn.experiments.data.images import ImageFolder
from torchstn.experiments.zoom import FRONTS, build_zoom_model


def _write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _folder(root, classes=("cat", "dog", "emu"), per_class=5, sizes=((40, 30), (24, 24))):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            img[..., c] = 255  # each class its own channel
            ext = ".png" if i % 2 else ".jpg"
            _write(root / name / f"{i}{ext}", img)
    return root


def test_loads_splits_and_resizes(tmp_path):
    root = _folder(tmp_path / "imgs")
    data = ImageFolder(root, size=(16, 16), test_fraction=0.2)
    assert data.classes == ["cat", "dog", "emu"]
    assert data.train_x.shape == (12, 3, 16, 16) and data.test_x.shape == (3, 3, 16, 16)
    assert data.train_x.dtype == torch.uint8
    assert sorted(data.test_y.tolist()) == [0, 1, 2]  # one test image per class
    again = ImageFolder(root, size=(16, 16), test_fraction=0.2)
    assert torch.equal(again.train_x, data.train_x)  # the split is seeded
    # The class channel (255) stands out of the noise (mean 128) after JPEG and resizing.
    for x, y in zip(data.train_x, data.train_y):
        means = x.float().mean((1, 2))
        assert means[y] > 200 and means[y] == means.max()


def test_pixels_are_read_exactly(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for name in ("a", "b"):
        _write(tmp_path / "train" / name / "x.png", img)
        _write(tmp_path / "test" / name / "x.png", img[::-1].copy())
    data = ImageFolder(tmp_path, size=None, resize="none")
    np.testing.assert_array_equal(data.train_x[0].permute(1, 2, 0).numpy(), img)
    np.testing.assert_array_equal(data.test_x[1].permute(1, 2, 0).numpy(), img[::-1])
    gray = ImageFolder(tmp_path, channels=1)
    expected = np.asarray(Image.fromarray(img).convert("L"))
    np.testing.assert_array_equal(gray.train_x[0, 0].numpy(), expected)


def test_crop_keeps_the_centre(tmp_path):
    img = np.zeros((20, 60, 3), dtype=np.uint8)
    img[:, 20:40] = 255  # a white centre third, black sides
    for name in ("a", "b"):
        _write(tmp_path / name / "0.png", img)
        _write(tmp_path / name / "1.png", img)
    crop = ImageFolder(tmp_path, size=(16, 16), resize="crop")
    assert crop.train_x.float().mean() > 250  # only the centre
    stretch = ImageFolder(tmp_path, size=(16, 16), resize="stretch")
    assert stretch.train_x.float().mean() < 120  # the sides squeezed in


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder .*nowhere does not exist"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="holds no class subfolders"):
        ImageFolder(tmp_path / "flat")
    root = _folder(tmp_path / "one", classes=("a",), per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty holds no JPEG or PNG files"):
        ImageFolder(root)
    bad = _folder(tmp_path / "bad", classes=("a", "b"), per_class=2)
    (bad / "b" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ImageFolder(bad, size=(8, 8))
    mixed = _folder(tmp_path / "mixed", classes=("a", "b"), per_class=2)
    with pytest.raises(ValueError, match=r"images of mixed sizes: .* is 40x30 but .* is 24x24"):
        ImageFolder(mixed, size=None)
    with pytest.raises(ValueError, match=r"with resize='none' every image must be 40x30: "):
        ImageFolder(mixed, size=(40, 30), resize="none")


@pytest.mark.parametrize("front", FRONTS)
def test_zoom_models_share_one_classifier_input(front):
    torch.manual_seed(0)
    model = build_zoom_model(front, in_channels=3, num_classes=4, input_size=16, loc_size=16,
                             width=4)
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 4)
    seen = model.view(x)
    assert seen.shape == ((2, 3, 64, 64) if front == "full" else (2, 3, 16, 16))
    if front in ("glimpse", "saliency"):  # untrained: the anti-aliased whole image
        torch.testing.assert_close(seen, torch.nn.functional.avg_pool2d(x, 4), rtol=0,
                                   atol=1e-5)


def test_train_from_the_command_line(tmp_path, capsys):
    root = _folder(tmp_path / "imgs", per_class=6)
    out = tmp_path / "run"
    code = main(["train", "--task", "images", "--data-dir", str(root), "--model", "glimpse",
                 "--image-size", "32", "--input-size", "16", "--loc-size", "16", "--width",
                 "4", "--epochs", "1", "--batch-size", "6", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["cat", "dog", "emu"]
    assert (out / "views.png").exists()
    assert main(["train", "--task", "images", "--epochs", "1", "--out", str(tmp_path / "r2"),
                 "--no-progress"]) != 0
    assert "--task images needs --data-dir DIR" in capsys.readouterr().err
