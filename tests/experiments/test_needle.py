"""The needle images: photographs from scikit-image's package, a seeded object with its
box, distractors."""

import math

import pytest
import torch

from torchstn.experiments.data.needle import PHOTOS, NeedleImages, load_photos


def _items(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.zeros(n, 28, 28, dtype=torch.uint8)
    items[:, 4:24, 6:22] = torch.randint(120, 256, (n, 20, 16), generator=g, dtype=torch.uint8)
    return items, torch.arange(n) % 10


def test_photos_are_the_packaged_ones():
    photos = load_photos()
    assert len(photos) == len(PHOTOS)
    for p in photos:
        assert p.shape[0] == 3 and min(p.shape[1:]) >= 300 and min(p.shape[1:]) <= 768
        assert 0 <= p.min() and p.max() <= 1 and p.std() > 0.02  # real images, not blank


def test_seeded_and_labelled():
    items, labels = _items()
    gen = NeedleImages(items, labels, [torch.rand(3, 300, 400)], canvas=128,
                       object_size=(16, 32))
    a = gen.make(4, torch.Generator().manual_seed(3))
    b = gen.make(4, torch.Generator().manual_seed(3))
    c = gen.make(4, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    x, y, boxes = a
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.uint8
    assert set(y.tolist()) <= set(labels.tolist())


def test_the_object_lies_in_its_box():
    items, labels = _items()
    grey = torch.full((3, 200, 200), 0.5)
    gen = NeedleImages(items, labels, [grey], canvas=96, object_size=(24, 40),
                       distractors=(0, 0))
    torch.manual_seed(0)
    x, y, boxes = gen.make(6, torch.Generator().manual_seed(0))
    for img, box in zip(x, boxes):
        # The background is grey after contrast and brightness: the changed pixels are ink.
        base = img[:, 0, 0].float()
        changed = (img.float() - base[:, None, None]).abs().amax(0) > 8
        ys, xs = torch.nonzero(changed, as_tuple=True)
        x0, y0, x1, y1 = box.tolist()
        assert xs.min() >= math.floor(x0) - 1 and xs.max() <= math.ceil(x1) + 1
        assert ys.min() >= math.floor(y0) - 1 and ys.max() <= math.ceil(y1) + 1
        side = x1 - x0
        assert 24 * 0.99 <= side <= 40 * math.sqrt(2) * 1.01
        assert xs.max() - xs.min() > 0.4 * side  # the box is not far larger than the ink


def test_distractors_are_smaller_and_outside_the_object():
    items, labels = _items()
    gen = NeedleImages(items, labels, [torch.full((3, 200, 200), 0.5)], canvas=160,
                       object_size=(48, 48), distractors=(6, 6))
    x, _, boxes = gen.make(3, torch.Generator().manual_seed(1))
    for img, box in zip(x, boxes):
        changed = (img.float() - img[:, 0, 0].float()[:, None, None]).abs().amax(0) > 8
        x0, y0, x1, y1 = (int(round(v)) for v in box.tolist())
        inside = torch.zeros_like(changed)
        inside[max(0, y0 - 1): y1 + 2, max(0, x0 - 1): x1 + 2] = True
        assert (changed & ~inside).any()  # distractors elsewhere
        assert (changed & ~inside).sum() < (changed & inside).sum()  # each one small


@pytest.mark.slow  # 17 s: the only slow one of this file; the images task trains by default
def test_train_a_glimpse_from_the_command_line(tmp_path):
    import json

    from torchstn.experiments.cli import main

    out = tmp_path / "run"
    code = main(["train", "--task", "needle", "--data-dir", "../shared/datasets", "--canvas",
                 "128", "--object-min", "16", "--object-max", "24", "--train-size", "16",
                 "--test-size", "8", "--input-size", "16", "--loc-size", "32", "--width", "4",
                 "--epochs", "2", "--batch-size", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test_object_in_view" in json.dumps(metrics)
    views = json.loads((out / "views.json").read_text())
    assert len(views) == 2 and len(views[0]) == 6
    assert (out / "views.png").exists() and (out / "glimpses.png").exists()


def test_glimpse_rectangles_in_image_coordinates(tmp_path):
    from torchstn.experiments.plots.figures import glimpse_rectangle, glimpse_tracks_figure

    # the whole image of 8 x 6 (h x w): pixels 0..5 cover [-0.5, 5.5]
    assert glimpse_rectangle((-1, -1, 1, 1), 8, 6) == (-0.5, -0.5, 6.0, 8.0)
    # the lower-right quarter starts at the middle edge (pixel 3's left edge in x)
    assert glimpse_rectangle((0, 0, 1, 1), 8, 6) == (2.5, 3.5, 3.0, 4.0)
    x = torch.rand(2, 3, 8, 6)
    tracks = [[(-1, -1, 1, 1), (0, 0, 1, 1)], [(-0.5, -0.5, 0.5, 0.5), (0, 0, 0.5, 0.5)]]
    path = glimpse_tracks_figure(tmp_path / "g.png", x, tracks, torch.tensor(
        [[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 4.0, 5.0]]), "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
