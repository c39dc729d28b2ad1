"""Co-localisation: the canvases, the boxes, the IoU, the crop boxes and the task's plumbing."""

import json

import pytest
import torch

import torchstn as ts
from torchstn.experiments import make_config, train
from torchstn.experiments.data.colocalization import box_iou, colocalization_images
from torchstn.experiments.data.idx import load_idx_dataset
from torchstn.experiments.tasks.colocalization import CoLocalizer, crop_boxes, random_patches


def test_box_iou_against_hand_computed_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [1, 1, 3, 3]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([1.0, 50 / 150, 0.0, 4 / 16]))


@pytest.mark.parametrize("clutter", [False, True])
def test_canvases_hold_the_digit_in_its_box(data_dir, clutter):
    images, boxes = colocalization_images(7, clutter=clutter, n=20, data_dir=data_dir)
    assert images.shape == (20, 1, 84, 84) and images.dtype == torch.uint8
    x, y = load_idx_dataset("mnist", "test", data_dir)
    for img, box in zip(images[:, 0], boxes.long()):
        x0, y0, x1, y1 = box.tolist()
        assert x1 - x0 == 28 and y1 - y0 == 28 and 0 <= x0 and x1 <= 84
        inside = img[y0:y1, x0:x1]
        # The pasted patch is a class-7 test digit (clutter may add to it, never remove).
        match = ((x[y == 7] <= inside).all(-1).all(-1))
        assert match.any()
        outside = img.clone()
        outside[y0:y1, x0:x1] = 0
        assert (outside.sum() > 0) == clutter
    again, _ = colocalization_images(7, clutter=clutter, n=20, data_dir=data_dir)
    assert torch.equal(again, images)
    with pytest.raises(ValueError, match="digit must be an int from 0 to 9, got 10"):
        colocalization_images(10, clutter=False, data_dir=data_dir)


def test_crop_boxes_are_where_the_attention_warp_reads():
    params = torch.tensor([[torch.log(torch.tensor(1 / 3)).item(), 0.25, -0.5]])
    (x0, y0, x1, y1), = crop_boxes(params).tolist()
    assert x1 - x0 == pytest.approx(28) and y1 - y0 == pytest.approx(28)
    image = torch.zeros(1, 1, 84, 84)
    image[..., round(y0):round(y1), round(x0):round(x1)] = 1
    crop = ts.warp(image, params, "attention", out_size=(28, 28), backend="torch")
    assert crop[..., 1:-1, 1:-1].min() > 0.99  # the crop sees only the box
    model = CoLocalizer(0.5)
    box = crop_boxes(model.attention(torch.rand(2, 1, 84, 84)))
    torch.testing.assert_close(box[0], torch.tensor([21.0, 21, 63, 63], dtype=torch.float64))


def test_the_task_needs_a_pretrained_encoder_and_trains(data_dir, tmp_path):
    cfg = make_config("colocalization", digit=1, images=8, repeats=1, epochs=1, batch_size=4,
                      encoder=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="encoder .*missing: not a finished run"):
        train(cfg, tmp_path / "run", data_dir=data_dir, progress=False)
    enc = make_config(distortion="none", model="cnn", epochs=1, train_size=256,
                      test_size=64, batch_size=64)
    train(enc, tmp_path / "enc", data_dir=data_dir, progress=False, figures=False)
    cfg = make_config("colocalization", digit=1, images=8, repeats=2, epochs=2, batch_size=4,
                      encoder=str(tmp_path / "enc"), encoding="maps")
    metrics = train(cfg, tmp_path / "run", data_dir=data_dir, progress=False)
    assert 0 <= metrics["test_hit_rate"] <= 100
    assert metrics["test_error"] == pytest.approx(100 - metrics["test_hit_rate"])
    tracks = json.loads((tmp_path / "run" / "tracks.json").read_text())
    assert len(tracks) == 2 and len(tracks[0]) == 6 and len(tracks[0][0]) == 4
    assert (tmp_path / "run" / "boxes.png").is_file()
    # The encoder came from the pretrained run, and stayed frozen.
    from safetensors.torch import load_file

    donor = load_file(tmp_path / "enc" / "checkpoint.safetensors")
    trained = load_file(tmp_path / "run" / "checkpoint.safetensors")
    first = [k for k in trained if k.startswith("model.encoder.")][0]
    assert torch.equal(trained[first], donor[first.replace("encoder.", "")])


@pytest.mark.parametrize("patches, patch_scale", [("apart", 0.3), ("anywhere", 0.0)])
def test_train_step_draws_its_patches_by_the_config(data_dir, tmp_path, monkeypatch,
                                                    patches, patch_scale):
    from torchstn.experiments.tasks import build_task
    from torchstn.experiments.tasks import colocalization as coloc

    enc = make_config(distortion="none", model="cnn", epochs=1, train_size=128,
                      test_size=32, batch_size=64)
    train(enc, tmp_path / "enc", data_dir=data_dir, progress=False, figures=False)
    cfg = make_config("colocalization", digit=4, images=6, encoder=str(tmp_path / "enc"),
                      patches=patches, patch_scale=patch_scale)
    task = build_task(cfg.task, data_dir=data_dir)
    model = task.build_model()
    seen = {}

    def spy(params, *, crop_params=None, apart=True):
        out = random_patches(params, crop_params=crop_params, apart=apart)
        seen.update(crop_params=crop_params, apart=apart, out=out)
        return out

    monkeypatch.setattr(coloc, "random_patches", spy)
    task.train_step(model, (torch.arange(6), 0.0))
    assert seen["apart"] == (patches == "apart")
    # Apart from the crops the step took (the crop's own parameters, not the patches').
    torch.testing.assert_close(seen["crop_params"],
                               model.attention(task._x(torch.arange(6))).detach())
    crop_scale = seen["crop_params"][:, 0].exp()
    want = torch.full_like(crop_scale, patch_scale) if patch_scale else crop_scale
    torch.testing.assert_close(seen["out"][:, 0].exp(), want)


def test_fixed_scale_learns_the_position_only():
    model = CoLocalizer(1 / 3, fixed_scale=True)
    params = model.attention(torch.rand(4, 1, 84, 84))
    torch.testing.assert_close(params[:, 0].exp(), torch.full((4,), 1 / 3))
    params.sum().backward()
    grad = model.stn.head.weight.grad
    assert grad[0].abs().sum() == 0 and grad[1:].abs().sum() > 0
    with pytest.raises(ValueError, match="init_scale must be between 0 and 1"):
        CoLocalizer(1.5)


def test_the_crop_bound_shrinks_over_training_and_the_crops_follow_it(data_dir, tmp_path):
    # An encoder on rts digits gives 42x42 crops; the bound goes from 0.9 to 0.5 of the
    # canvas over 2 epochs, the crops stay under it.
    enc = make_config(distortion="rts", model="cnn", epochs=1, train_size=128,
                      test_size=32, batch_size=64)
    train(enc, tmp_path / "enc", data_dir=data_dir, progress=False, figures=False)
    cfg = make_config("colocalization", digit=2, images=6, repeats=2, epochs=3, batch_size=3,
                      encoder=str(tmp_path / "enc"), init_scale=0.9, final_scale=0.5,
                      shrink_epochs=2, patches="anywhere")
    from torchstn.experiments.tasks import build_task

    task = build_task(cfg.task, data_dir=data_dir)
    assert [task.crop_bound(p) for p in (0, 1, 2, 3)] == pytest.approx([0.9, 0.7, 0.5, 0.5])
    model = task.build_model()
    assert model.side == 42 and model.bounded
    batches = list(task.train_batches(1, 3))
    assert [p for _, p in batches] == pytest.approx([1, 1.25, 1.5, 1.75])
    # The loss is the paper's hinge averaged over every ordered pair n != m of the batch,
    # recomputed here pair by pair from the same crops and random patches.
    from torchstn.warping import warp

    idx = torch.arange(4)
    torch.manual_seed(0)
    loss, _ = task.train_step(model, (idx, 0.5))
    torch.manual_seed(0)
    x = task._x(idx)
    crops, params = model(x, return_params=True)
    assert float(model.bound) == pytest.approx(task.crop_bound(0.5))
    e = model.encode(crops).detach()
    log_s = params[:, :1].detach()
    t = (torch.rand(4, 2) * 2 - 1) * (1 - log_s.exp())
    e_rand = model.encode(warp(x, torch.cat([log_s, t], 1), "attention", out_size=(42, 42)))
    terms = [max(0.0, float((e[n] - e[m]).pow(2).sum() - (e[n] - e_rand[n]).pow(2).sum() + 1))
             for n in range(4) for m in range(4) if m != n]
    loss = float(loss.detach())
    assert loss > 0 and loss == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    metrics = train(cfg, tmp_path / "run", data_dir=data_dir, progress=False, figures=False)
    assert 0 <= metrics["test_hit_rate"] <= 100
    tracks = json.loads((tmp_path / "run" / "tracks.json").read_text())
    sides = [[(b[2] - b[0]) / 84 for b in epoch] for epoch in tracks]
    assert all(side <= 0.9 + 1e-6 for side in sides[0])
    assert all(side <= 0.5 + 1e-6 for side in sides[-1])  # the bound at the end
    with pytest.raises(ValueError, match="task.final_scale' must be between 0 and 1"):
        make_config("colocalization", final_scale=1.5).resolved()
    with pytest.raises(ValueError, match=r"task.patch_scale' must be 0 \(as large as the crop\) "
                                         r"or between 0 and 1 .*got 1.0"):
        make_config("colocalization", patch_scale=1.0).resolved()


def _overlap(a, b):
    """Shared area of pixel boxes (x0, y0, x1, y1), in float64."""
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    return w * h


def test_random_patches_are_crop_sized_inside_the_canvas_and_apart_from_the_crop():
    torch.manual_seed(0)
    n = 400
    side = 0.2  # half-side 0.2 of the canvas' half-width: a patch apart fits in 16 draws
    params = torch.cat([torch.full((n, 1), side).log(), (torch.rand(n, 2) * 2 - 1) * 0.8], 1)
    crop = crop_boxes(params)
    for apart in (False, True):
        patch = random_patches(params, apart=apart)
        boxes = crop_boxes(patch)
        torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], crop[:, 2:] - crop[:, :2])
        assert boxes.min() >= -1e-9 and boxes.max() <= 84 + 1e-9
        overlapping = (_overlap(boxes, crop) > 0).double().mean().item()
        if apart:
            assert overlapping == 0
        else:  # uniform: about (0.8 / 1.6)^2 of them overlap a centred crop, fewer near edges
            assert 0.1 < overlapping < 0.4
    # Patches of another size than the crops (`patch_scale`): apart from the crop all the same.
    small = torch.cat([torch.full((n, 1), 0.2).log(), torch.zeros(n, 2)], 1)
    centred = torch.cat([torch.full((n, 1), 0.3).log(), torch.zeros(n, 2)], 1)
    boxes = crop_boxes(random_patches(small, crop_params=centred))
    torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], torch.full((n, 2), 0.4 * 42,
                                                                       dtype=torch.float64))
    assert _overlap(boxes, crop_boxes(centred)).max() == 0
    # A centred crop of 0.6 leaves no room for a patch of 0.5 apart from it: every patch
    # overlaps, and the least overlapping of the draws is kept. Uniform patches overlap by
    # 0.706 of a patch's area on average (E[min(1, 1.1 - |t|)]^2 for t uniform in
    # [-0.5, 0.5], integrated in float64), the best of 16 draws by far less; none by less
    # than 0.36 (in a corner: 0.6 of the side each way).
    big = torch.cat([torch.full((n, 1), 0.6).log(), torch.zeros(n, 2)], 1)
    half = torch.cat([torch.full((n, 1), 0.5).log(), torch.zeros(n, 2)], 1)
    area = 42.0**2
    share = {apart: _overlap(crop_boxes(random_patches(half, crop_params=big, apart=apart)),
                             crop_boxes(big)) / area for apart in (False, True)}
    assert share[False].mean().item() == pytest.approx(0.706, abs=0.02)
    assert share[True].min() >= 0.36 - 1e-6 and share[True].mean() < 0.5


def test_a_saturated_scale_gives_finite_parameters_and_gradients():
    # A localisation net driven far out (scale logit -200: sigmoid is 0 in float32) must
    # not turn the crop's log-scale into -inf and the gradients into NaN.
    model = CoLocalizer(0.5, side=28, encoding="prob", bounded=True)
    with torch.no_grad():
        model.stn.head.weight.zero_()
        model.stn.head.bias.copy_(torch.tensor([-200.0, 0.3, -0.2]))
    x = torch.rand(3, 1, 84, 84, requires_grad=True)
    crops, params = model(x, return_params=True)
    want = -200.0 + torch.log(torch.tensor(0.5))  # logsigmoid(-200) + log(bound)
    torch.testing.assert_close(params[:, 0], want.float().expand(3))
    (crops.sum() + params.sum()).backward()
    grads = [p.grad for p in model.stn.parameters() if p.grad is not None] + [x.grad]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_prob_encoding_is_the_encoders_softmax():
    model = CoLocalizer(0.5, side=42, encoding="prob")
    crops = torch.rand(3, 1, 42, 42)
    torch.testing.assert_close(model.encode(crops), torch.softmax(model.encoder(crops), 1))
    with pytest.raises(ValueError, match="encoding must be 'prob' or 'maps'"):
        CoLocalizer(0.5, encoding="logits")


def test_reproduce_colocalization_runs_each_digit_and_variant_beside_the_paper(
        data_dir, tmp_path, monkeypatch, capsys):
    from torchstn.experiments.cli import main
    from torchstn.experiments.reports import reproduce as rep

    enc = make_config(distortion="rts", model="cnn", epochs=1, train_size=128,
                      test_size=32, batch_size=64)
    train(enc, tmp_path / "enc", data_dir=data_dir, progress=False, figures=False)
    args = ["reproduce", "colocalization", "--out", str(tmp_path / "c"), "--digits", "1",
            "--encoder", str(tmp_path / "enc"), "--images", "6", "--epochs", "1",
            "--repeats", "1", "--batch-size", "3", "--shrink-epochs", "1", "--no-progress",
            "--data-dir", str(data_dir)]
    assert main(args) == 0
    table = (tmp_path / "c" / "colocalization.md").read_text()
    hits = [json.loads((tmp_path / "c" / v / "digit1" / "seed0" / "metrics.json").read_text())
            ["test_hit_rate"] for v in ("t", "tc")]
    assert f"| 1 | {hits[0]:.2f} | 100 | {hits[1]:.2f} | 75-93 |" in table
    saved = json.loads((tmp_path / "c" / "tc" / "digit1" / "seed0" / "config.json").read_text())
    assert saved["task"]["clutter"] and saved["task"]["digit"] == 1
    assert saved["task"]["data_seed"] == 1 and saved["task"]["encoding"] == "prob"
    calls = []
    monkeypatch.setattr(rep, "train", lambda *a, **k: calls.append(a))
    assert main(args) == 0
    assert calls == []  # finished: skipped
    with pytest.raises(ValueError, match="variants must be among"):
        rep.run_colocalization(tmp_path, variants=["x"])
