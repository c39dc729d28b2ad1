"""House numbers: the synthetic generator, the A.5 models, the sequence loss and reading,
and the house-numbers and svhn tasks through the engine."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from torchstn import find_transformers
from torchstn.experiments import make_config, train
from torchstn.experiments.data.house_numbers import (
    CANVAS,
    HouseNumbers,
    SVHNData,
    centre_crop,
    draw_numbers,
    random_crops,
    render_numbers,
)
from torchstn.experiments.data.svhn import NO_DIGIT
from torchstn.experiments.models import HOUSE_OUTPUTS, build_house_model
from torchstn.experiments.tasks.house_numbers import read_numbers, sequence_loss


@pytest.fixture(scope="module")
def tight(request):
    from conftest import DATA_DIR

    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip("MNIST not found")
    return HouseNumbers("tight", data_dir=DATA_DIR, train_size=300, test_size=400)


def test_labels_are_the_drawn_digits_then_no_digit(tight):
    x, labels = tight.test_set()
    assert x.dtype == torch.uint8 and x.shape == (400, 1, 64, 64)
    gen = torch.Generator().manual_seed(tight.test_seed)  # redraw what the test set drew
    drawn = draw_numbers(400, gen, len(tight.test_x), "tight")
    for i in range(400):
        n = int(drawn["lengths"][i])
        want = tight.test_y[drawn["digits"][i, :n]].tolist() + [NO_DIGIT] * (5 - n)
        assert labels[i].tolist() == want
    counts = torch.bincount(drawn["lengths"], minlength=6)[1:]
    assert counts.min() > 50  # every length from 1 to 5, about equally often


def test_a_one_digit_number_keeps_its_ink_scaled_by_the_maps_area(tight):
    """Independent of the sampler: ink mass grows by the area the map gives a pixel."""
    gen = torch.Generator().manual_seed(7)
    drawn = draw_numbers(200, gen, len(tight.test_x), "tight")
    one = (drawn["lengths"] == 1).nonzero().squeeze(1)
    assert len(one) > 20
    x = render_numbers(tight.test_x, drawn, "tight", dtype=torch.float64)[one]
    digits = tight.test_x[drawn["digits"][one, 0]].double() / 255
    theta = drawn["theta"][one, 0].reshape(-1, 2, 3)[:, :, :2]
    # canvas pixels per digit pixel: (64 / 2)^2 / (28 / 2)^2 / |det theta|
    area = (32.0 / 14.0) ** 2 / torch.linalg.det(theta).abs()
    ratio = x.sum((1, 2, 3)) / (digits.sum((1, 2)) * area)
    # Nearly all keep it to 0.2%; a few lose a little ink over the canvas's edge (a tight
    # crop, then rotated, zoomed and shifted), none gains.
    assert (ratio - 1).abs().median() < 2e-3 and (ratio > 0.9).all() and (ratio < 1.005).all()


def test_the_number_fills_a_tight_canvas_and_stays_inside(tight):
    x, labels = tight.test_set()
    ink = x[:, 0] > 128
    assert not ink[:, 0, :].any() or ink[:, 0, :].float().mean() < 0.01  # borders nearly empty
    cols = ink.any(1)
    span = torch.tensor([(c.nonzero().max() - c.nonzero().min() + 1).item() if c.any() else 0
                         for c in cols])
    assert span.float().median() > 30 and span.max() <= 64


def test_batches_are_seeded_and_shard_exactly(tight):
    a = list(tight.train_batches(0, 128, crop=54))
    b = list(tight.train_batches(0, 128, crop=54))
    c = list(tight.train_batches(1, 128, crop=54))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert [len(y) for _, y in a] == [128, 128, 44] and a[0][0].shape == (128, 1, 54, 54)
    shards = [list(tight.train_batches(0, 128, rank=r, world=2, crop=54)) for r in range(2)]
    for k, (x, y) in enumerate(a):
        assert torch.equal(torch.cat([shards[0][k][0], shards[1][k][0]]), x)
        assert torch.equal(torch.cat([shards[0][k][1], shards[1][k][1]]), y)


def test_loose_numbers_have_clutter_and_bad_variants_are_named(tight):
    gen = torch.Generator().manual_seed(1)
    drawn = draw_numbers(8, gen, len(tight.test_x), "loose")
    x = render_numbers(tight.test_x, drawn, "loose")
    assert x.shape == (8, 1, 128, 128)
    no_clutter = {k: v for k, v in drawn.items() if not k.startswith(("clutter", "piece"))}
    clean = render_numbers(tight.test_x, no_clutter, "loose")
    assert (x >= clean).all() and ((x - clean).sum((1, 2, 3)) > 5).all()
    with pytest.raises(ValueError, match="variant must be one of tight, loose, got 'wide'"):
        draw_numbers(2, gen, 10, "wide")
    assert CANVAS == {"tight": 64, "loose": 128}


def test_random_and_centre_crops_are_windows():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    off = torch.tensor([[1, 2], [4, 0]])
    got = random_crops(x, off, 6)
    assert torch.equal(got[0], x[0, :, 2:8, 1:7]) and torch.equal(got[1], x[1, :, 0:6, 4:10])
    assert torch.equal(centre_crop(x, 6), x[..., 2:8, 2:8])


def _brute_force_read(logits):
    """The most likely number by enumerating every length, in float64."""
    lp_len = F.log_softmax(logits[:5].double(), 0)
    lp = F.log_softmax(logits[5:].double().reshape(5, 11), 1)
    best, best_seq = -math.inf, None
    for length in range(1, 6):
        digits = [int(lp[i, :10].argmax()) for i in range(length)]
        score = lp_len[length - 1] + sum(lp[i, d] for i, d in enumerate(digits))
        score += sum(lp[i, 10] for i in range(length, 5))
        if score > best:
            best, best_seq = score, digits + [10] * (5 - length)
    return best_seq


def test_reading_is_the_most_likely_sequence():
    logits = torch.randn(200, HOUSE_OUTPUTS) * 3
    got = read_numbers(logits)
    assert got.tolist() == [_brute_force_read(row) for row in logits]


def test_sequence_loss_is_the_sum_of_the_six_cross_entropies():
    logits = torch.randn(6, HOUSE_OUTPUTS)
    labels = torch.tensor([[1, 2, 10, 10, 10], [0, 10, 10, 10, 10], [9, 9, 9, 9, 9],
                           [3, 4, 5, 10, 10], [7, 7, 7, 7, 10], [5, 10, 10, 10, 10]])
    want = 0.0
    for row, lab in zip(logits.double(), labels):
        n = int((lab != 10).sum())
        want -= F.log_softmax(row[:5], 0)[n - 1]
        for i in range(5):
            want -= F.log_softmax(row[5 + 11 * i: 16 + 11 * i], 0)[lab[i]]
    assert sequence_loss(logits, labels).item() == pytest.approx(want.item() / 6, rel=1e-6)
    assert sequence_loss(logits, labels, "sum").item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("side", [54, 108])
def test_models_shapes_transformers_and_width(side):
    counts = {}
    for name, k in (("cnn", 0), ("st-cnn-single", 1), ("st-cnn-multi", 4)):
        model = build_house_model(name, side, in_channels=3, width=0.1)
        assert model(torch.rand(2, 3, side, side)).shape == (2, HOUSE_OUTPUTS)
        assert len(find_transformers(model)) == k
        counts[name] = sum(p.numel() for p in model.parameters())
    full = build_house_model("cnn", side, width=1.0)
    convs = [m.out_channels for m in full.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [48, 64, 128, 160, 192, 192, 192, 192]
    fcs = [m.out_features for m in full.modules() if isinstance(m, torch.nn.Linear)]
    assert fcs == [3072, 3072, HOUSE_OUTPUTS]
    assert counts["cnn"] < counts["st-cnn-single"] < counts["st-cnn-multi"]
    with pytest.raises(ValueError, match="width must be a positive number, got -1"):
        build_house_model("cnn", side, width=-1)


def test_multi_at_identity_computes_what_the_cnn_computes():
    torch.manual_seed(0)
    multi = build_house_model("st-cnn-multi", 54, in_channels=1, width=0.1).eval()
    cnn = build_house_model("cnn", 54, in_channels=1, width=0.1).eval()
    convs = lambda m: [x for x in m.modules()  # noqa: E731
                       if isinstance(x, (torch.nn.Conv2d, torch.nn.Linear))
                       and not any(x is y for s in find_transformers(m) for y in s.modules())]
    with torch.no_grad():
        for a, b in zip(convs(multi), convs(cnn)):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        x = torch.rand(3, 1, 54, 54)
        torch.testing.assert_close(multi(x), cnn(x), rtol=1e-4, atol=1e-5)


def test_the_house_numbers_task_trains(data_dir, tmp_path):
    cfg = make_config(task="house-numbers", model="st-cnn-multi", width=0.05, train_size=64,
                      test_size=50, epochs=1, batch_size=32, loc_lr_mult=0.1)
    metrics = train(cfg, tmp_path / "run", data_dir=data_dir, progress=False, figures=False)
    for key in ("test_error", "test_digit_error", "test_length_accuracy", "test_loss"):
        assert math.isfinite(metrics[key])
    assert 0 <= metrics["test_error"] <= 100 and metrics["input"] == 54
    assert metrics["dataset"] == "house-numbers-tight"


def test_the_svhn_task_trains_on_published_layout_files(tmp_path):
    from test_svhn import write_split

    write_split(tmp_path, "train")
    write_split(tmp_path, "test")
    data = SVHNData(64, data_dir=tmp_path)
    assert len(data.train_x) == 3 and data.dropped == 2 and data.train_x.shape[1] == 3
    x, y = next(data.train_batches(0, 8, crop=54))
    assert x.shape == (3, 3, 54, 54) and x.dtype == torch.float32
    cfg = make_config(task="svhn", model="st-cnn-single", width=0.05, extra=False, epochs=1,
                      batch_size=2)
    metrics = train(cfg, tmp_path / "run", data_dir=tmp_path, progress=False, figures=False)
    assert metrics["dataset"] == "svhn-64" and metrics["dropped_over_5_digits"] == 2
    with pytest.raises(ValueError, match="val_size must be between 1 and 2"):
        SVHNData(64, data_dir=tmp_path, val_size=3)
    held = SVHNData(64, data_dir=tmp_path, val_size=1)
    assert len(held.train_x) == 2 and len(held.test_x) == 1


def test_every_length_pattern_round_trips_through_reading():
    """Confident logits for a number read back as that number."""
    for n, digits in itertools.product(range(1, 6), ([3, 1, 4, 1, 5], [0, 0, 9, 8, 7])):
        labels = digits[:n] + [NO_DIGIT] * (5 - n)
        logits = torch.full((1, HOUSE_OUTPUTS), -5.0)
        logits[0, n - 1] = 5.0
        for i, d in enumerate(labels):
            logits[0, 5 + 11 * i + d] = 5.0
        assert read_numbers(logits)[0].tolist() == labels


def test_reproduce_house_numbers_runs_the_grid_and_writes_table_2(data_dir, tmp_path,
                                                                 monkeypatch, capsys):
    import json

    from torchstn.experiments.cli import main
    from torchstn.experiments.reports import house_numbers as hn
    from torchstn.experiments.reports import reproduce as rep

    base = hn.house_base("house-numbers", epochs=1, train_size=64, test_size=40, width=0.05,
                         batch_size=32)
    assert base.optim.loc_lr_mult == 1.0 and base.train.precision == "auto"
    assert hn.house_cell(base, 128, "st-cnn-multi").task.st_size == hn.LOOSE_ST_SIZE == 54
    assert hn.house_cell(base, 64, "st-cnn-multi").task.st_size is None
    assert hn.house_cell(base, 128, "cnn").task.st_size is None
    # Multi's localisation nets at a tenth of the recipe's rate, the others at the rate.
    for size in (64, 128):
        assert hn.house_cell(base, size, "st-cnn-multi").optim.loc_lr_mult == 0.1
        assert hn.house_cell(base, size, "st-cnn-single").optim.loc_lr_mult == 1.0
    halved = hn.house_base("house-numbers", loc_lr_mult=0.5)
    assert hn.house_cell(halved, 64, "st-cnn-multi").optim.loc_lr_mult == 0.05
    svhn = hn.house_base("svhn")
    assert hn.house_cell(svhn, 64, "st-cnn-multi").optim.loc_lr_mult == 0.1
    assert hn.house_cell(svhn, 64, "st-cnn-single").optim.loc_lr_mult == 0.1
    table = hn.run_house_numbers("house-numbers", tmp_path, models=["cnn", "st-cnn-single"],
                                 sizes=[64], base=base, data_dir=data_dir, progress=False)
    ours = json.loads((tmp_path / "64" / "st-cnn-single" / "seed0" / "metrics.json")
                      .read_text())
    assert f"| ST-CNN Single | {ours['test_error']:.2f} | 3.7 |" in table
    assert "localisation nets at 1x)" in table  # no Multi row, no Multi rate
    multi_note = hn.house_markdown("house-numbers", tmp_path, list(hn.HOUSE_ROWS), [64], 1,
                                   base)
    assert "localisation nets at 1x, ST-CNN Multi's at 0.1x)" in multi_note
    assert (tmp_path / "house-numbers.md").read_text() == table
    # A finished grid run keeps its weights, not Adam's moments, and still evaluates.
    from torchstn.experiments.checkpoint import has_optimizer_state
    from torchstn.experiments.engine import evaluate, load_run

    run = tmp_path / "64" / "st-cnn-single" / "seed0"
    assert not has_optimizer_state(run / "checkpoint.safetensors")
    _, task, model, _ = load_run(run, data_dir=data_dir)
    assert evaluate(task, model)["test_error"] == pytest.approx(ours["test_error"], abs=1e-9)
    calls = []
    monkeypatch.setattr(rep, "train", lambda *a, **k: calls.append(a))
    hn.run_house_numbers("house-numbers", tmp_path, models=["cnn", "st-cnn-single"],
                         sizes=[64], base=base, data_dir=data_dir, progress=False)
    assert calls == []  # finished: skipped
    with pytest.raises(ValueError, match=r"sizes must be among \[64, 128\], got 96"):
        hn.run_house_numbers("house-numbers", tmp_path, sizes=[96], base=base)
    seen = []
    monkeypatch.setattr(hn, "run_house_numbers",
                        lambda name, out, base, **kw: seen.append((name, base, kw)) or "t")
    assert main(["reproduce", "house-numbers", "--out", str(tmp_path), "--epochs", "3",
                 "--sizes", "128"]) == 0
    assert seen[0][1] == hn.house_base("house-numbers", epochs=3).resolved()
    assert seen[0][2]["sizes"] == [128]
    assert main(["reproduce", "svhn", "--out", str(tmp_path), "--no-extra"]) == 0
    assert seen[1][1].task.name == "svhn" and seen[1][1].task.width == 1.0
    assert seen[1][1].task.extra is False
    capsys.readouterr()
    assert main(["reproduce", "svhn", "--out", str(tmp_path), "--download"]) != 0
    assert "SVHN is not downloaded by torchstn" in capsys.readouterr().err


def test_input_regions_compose_the_transformers_back_to_the_input(tmp_path):
    from torchstn.experiments.plots.figures import (
        capture_transformers,
        house_numbers_figure,
        input_regions,
    )

    model = build_house_model("st-cnn-multi", 54, in_channels=1, width=0.1).eval()
    x = torch.rand(3, 1, 54, 54)
    regions = input_regions(capture_transformers(model, x))
    assert len(regions) == 4
    for r in regions:  # at identity: every transformer reads the whole input
        assert r.abs().amax().item() == pytest.approx(1.0) and r.abs().amin() >= 0
    # Halve the first transformer's scale and shift it: all four regions follow (composed).
    stns = find_transformers(model)
    with torch.no_grad():
        stns[0].head.bias.copy_(torch.tensor([0.5, 0, 0.25, 0, 0.5, -0.25]))
    regions = input_regions(capture_transformers(model, x))
    for r in regions:
        torch.testing.assert_close(r[..., 0].amax(1), torch.full((3,), 0.75, dtype=r.dtype))
        torch.testing.assert_close(r[..., 1].amin(1), torch.full((3,), -0.75, dtype=r.dtype))
    assert house_numbers_figure(model, x, tmp_path / "regions.png").is_file()


def test_the_models_command_lists_the_house_number_models(capsys):
    from torchstn.experiments.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    full = sum(p.numel() for p in build_house_model("st-cnn-multi", 54).parameters())
    assert f"st-cnn-multi{full:>20,}" in out


def test_a_first_transformer_may_sample_a_smaller_output(data_dir, tmp_path):
    """``st_size`` 54 at 128 px: at the identity the transformer samples the centre of each
    2x2 block of the 108x108 crop, an exact 2x2 average; the classifier then computes what
    the CNN computes on that average."""
    torch.manual_seed(0)
    for name in ("st-cnn-single", "st-cnn-multi"):
        model = build_house_model(name, 108, in_channels=1, width=0.1, st_size=54).eval()
        stn = find_transformers(model)[0]
        assert tuple(stn.out_size) == (54, 54)
        x = torch.rand(3, 1, 108, 108)
        with torch.no_grad():
            torch.testing.assert_close(stn(x), F.avg_pool2d(x, 2), rtol=0, atol=1e-6)
            assert model(x).shape == (3, HOUSE_OUTPUTS)
        # A 54x54 CNN's classifier fits behind it: same weights, same logits.
        cnn = build_house_model("cnn", 54, in_channels=1, width=0.1).eval()
        if name == "st-cnn-single":
            layers = [m for m in model.net if m is not stn]
            with torch.no_grad():
                for a, b in zip([m for m in layers if isinstance(m, (torch.nn.Conv2d,
                                                                        torch.nn.Linear))],
                                [m for m in cnn.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                               torch.nn.Linear))]):
                    b.weight.copy_(a.weight)
                    b.bias.copy_(a.bias)
                torch.testing.assert_close(model(x), cnn(F.avg_pool2d(x, 2)), rtol=1e-4,
                                           atol=1e-5)
    for bad, match in ((15, "st_size must be an int from 16 to the input's side 108, got 15"),
                       (109, "got 109"), (54.0, "got 54.0")):
        with pytest.raises(ValueError, match=match):
            build_house_model("st-cnn-single", 108, st_size=bad)
    with pytest.raises(ValueError, match="st_size needs a transformer"):
        build_house_model("cnn", 108, st_size=54)
    with pytest.raises(ValueError, match=r"task.st_size must be left unset for model 'cnn'"):
        make_config(task="house-numbers", model="cnn", st_size=54).resolved()
    with pytest.raises(ValueError, match=r"task.st_size must be at most the crop's side 54, "
                                         r"got 60"):
        make_config(task="house-numbers", model="st-cnn-single", st_size=60).resolved()
    cfg = make_config(task="house-numbers", variant="loose", model="st-cnn-single",
                      st_size=54, width=0.05, train_size=32, test_size=20, epochs=1,
                      batch_size=32)
    metrics = train(cfg, tmp_path / "run", data_dir=data_dir, progress=False, figures=False)
    assert metrics["input"] == 108 and metrics["st_size"] == 54


@pytest.mark.parametrize("variant", ["tight", "loose"])
def test_the_ink_box_holds_the_rendered_number(data_dir, variant):
    """``draw_numbers()["box"]``: the ink of every number (clutter left out) lies in its
    box, but for the few pixels MNIST digits reach beyond the central 20x20 of their box;
    ``box_share`` counts pixels of the central window the box covers."""
    from torchstn.experiments.data import load_idx_dataset
    from torchstn.experiments.data.house_numbers import CANVAS, box_share, render_numbers

    pool = load_idx_dataset("mnist", "test", data_dir)[0][:500]
    drawn = draw_numbers(60, torch.Generator().manual_seed(4), len(pool), variant)
    for key in ("clutter", "piece", "clutter_theta"):
        drawn.pop(key, None)
    image = render_numbers(pool, drawn, variant, dtype=torch.float64)[:, 0]
    size = CANVAS[variant]
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    box = drawn["box"]
    inside = ((xs >= box[:, 0, None, None]) & (xs <= box[:, 2, None, None])
              & (ys >= box[:, 1, None, None]) & (ys <= box[:, 3, None, None]))
    held = (image * inside).sum((1, 2)) / image.sum((1, 2))
    assert held.mean() > 0.99 and held.min() > 0.9
    # A box a quarter of the box (shrunk by half each way) holds much less: not vacuous.
    mid = (box[:, :2] + box[:, 2:]) / 2
    small = torch.cat([mid - (box[:, 2:] - box[:, :2]) / 4, mid + (box[:, 2:] - box[:, :2]) / 4], 1)
    inside_small = ((xs >= small[:, 0, None, None]) & (xs <= small[:, 2, None, None])
                    & (ys >= small[:, 1, None, None]) & (ys <= small[:, 3, None, None]))
    assert ((image * inside_small).sum((1, 2)) / image.sum((1, 2))).mean() < 0.7
    # The share against a count of pixel centres (1/8 pixel sub-grid) of the window.
    window = size * 54 // 64
    lo = (size - window) / 2
    sub = lo + (torch.arange(window * 8, dtype=torch.float64) + 0.5) / 8
    gy, gx = torch.meshgrid(sub, sub, indexing="ij")
    for b, share in zip(box[:5], box_share(box[:5], size, window)):
        covered = ((gx >= b[0]) & (gx <= b[2]) & (gy >= b[1]) & (gy <= b[3])).double().mean()
        assert share.item() == pytest.approx(covered.item(), abs=2e-3)
    assert box_share(torch.tensor([[-5.0, -5.0, 200.0, 200.0]]), size).item() == 1.0
    assert box_share(torch.tensor([[0.0, 0.0, size / 2, size]]), size).item() == 0.5
