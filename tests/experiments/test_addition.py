"""MNIST addition: the data (pairs, sums, seeds, shards), the models and the task."""

import dataclasses
import json

import pytest
import torch

from torchstn.experiments import load_run, make_config, train
from torchstn.experiments.cli import main
from torchstn.experiments.data.addition import NUM_SUMS, AdditionMNIST
from torchstn.experiments.data.distortions import distort
from torchstn.experiments.data.idx import load_idx_dataset
from torchstn.experiments.models import ADDITION_MODELS, build_addition_model


def test_training_pairs_are_two_distorted_digits_and_their_sum(data_dir):
    data = AdditionMNIST(data_dir=data_dir, train_size=512, seed=3)
    batches = list(data.train_batches(0, 128))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (512, 2, 42, 42) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.min() >= 0 and y.max() <= 18
    # Every digit is the first of one pair and the second of one: the sums add up to twice
    # the digits' labels.
    assert y.sum() == 2 * data.train_y.sum()
    # Each channel holds one whole digit: as much ink as an RTS digit has.
    ink = x.sum((2, 3))
    single, _ = distort(data.train_x[:512], "rts", torch.Generator().manual_seed(0))
    expected = single.sum((1, 2, 3)).mean()
    torch.testing.assert_close(ink.mean(0), expected.expand(2), rtol=0.05, atol=0)
    # Reproducible from (seed, epoch); another epoch draws other pairs.
    again = torch.cat([b[0] for b in data.train_batches(0, 128)])
    assert torch.equal(again, x)
    assert not torch.equal(torch.cat([b[0] for b in data.train_batches(1, 128)]), x)


def test_each_label_is_the_sum_of_the_two_digits_in_its_channels(data_dir):
    """Replays the epoch's stream: the two shuffles, then each batch's two distortions."""
    from torchstn.experiments.data.mnist import epoch_generator

    data = AdditionMNIST(data_dir=data_dir, train_size=200, seed=5)
    x, y = next(iter(data.train_batches(3, 64)))
    gen = epoch_generator(5, 3)
    first, second = torch.randperm(200, generator=gen), torch.randperm(200, generator=gen)
    a, _ = distort(data.train_x[first[:64]], "rts", gen)
    b, _ = distort(data.train_x[second[:64]], "rts", gen)
    assert torch.equal(x[:, :1], a) and torch.equal(x[:, 1:], b)
    assert torch.equal(y, data.train_y[first[:64]] + data.train_y[second[:64]])


def test_shards_of_a_batch_are_the_single_process_batch(data_dir):
    data = AdditionMNIST(data_dir=data_dir, train_size=300, seed=1)
    whole = list(data.train_batches(2, 100))
    for rank in range(3):
        shards = list(data.train_batches(2, 100, rank=rank, world=3))
        for (x, y), (xs, ys) in zip(whole, shards):
            rows = slice(rank * 100 // 3, (rank + 1) * 100 // 3)
            assert torch.equal(xs, x[rows]) and torch.equal(ys, y[rows])


def test_the_test_pairs_are_fixed_and_pair_each_test_digit_with_another(data_dir):
    data = AdditionMNIST(data_dir=data_dir, test_size=1000)
    x, y = data.test_set()
    assert x.shape == (1000, 2, 42, 42) and x.dtype == torch.uint8
    _, labels = load_idx_dataset("mnist", "test", data_dir)
    first = labels[:1000].long()
    partner = y.long() - first  # the second digit's label
    assert torch.equal(partner.sort().values, first.sort().values)  # a permutation
    assert not torch.equal(partner, first)
    same = AdditionMNIST(data_dir=data_dir, test_size=1000).test_set()
    assert torch.equal(same[0], x) and torch.equal(same[1], y)
    other = AdditionMNIST(data_dir=data_dir, test_size=1000, test_seed=7).test_set()
    assert not torch.equal(other[0], x)
    # The validation pairs come from held-out training digits, not the test digits.
    val = AdditionMNIST(data_dir=data_dir, val_size=1000).test_set()
    assert val[0].shape == (1000, 2, 42, 42) and not torch.equal(val[0][:10], x[:10])


@pytest.mark.parametrize("name", ADDITION_MODELS.names())
def test_addition_models_are_about_equal_in_size_and_start_at_the_identity(name):
    torch.manual_seed(0)
    model = build_addition_model(name)
    x = torch.rand(3, 2, 42, 42)
    assert model(x).shape == (3, NUM_SUMS)
    count = sum(p.numel() for p in model.parameters())
    assert 400_000 < count < 480_000, count
    if name.startswith(("st-", "2xst-")):
        k = 2 if name.startswith("2x") else 1
        out = model.stn(x)
        half = torch.nn.functional.interpolate(x, size=(21, 21), mode="bilinear",
                                               align_corners=False, antialias=False)
        assert out.shape == (3, 2 * k, 21, 21)
        torch.testing.assert_close(out, half.repeat(1, k, 1, 1), atol=1e-5, rtol=0)


def test_the_addition_task_trains_scores_and_evaluates(data_dir, tmp_path, capsys):
    cfg = make_config("mnist-addition", model="2xst-fcn-affine", epochs=1, train_size=256,
                      test_size=64, batch_size=64)
    metrics = train(cfg, tmp_path, data_dir=data_dir, progress=False)
    assert metrics["task"] == "mnist-addition" and 0 <= metrics["test_error"] <= 100
    assert (tmp_path / "transformer.png").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["task"]["name"] == "mnist-addition"
    cfg2, task, model, _ = load_run(tmp_path, data_dir=data_dir)
    assert task.example_inputs(2)[0].shape == (2, 2, 42, 42)
    assert main(["eval", str(tmp_path), "--data-dir", str(data_dir)]) == 0
    assert f"{metrics['test_error']:.2f}" in capsys.readouterr().out


def test_reproduce_addition_runs_each_row_and_writes_the_table_beside_the_paper(
        data_dir, tmp_path, monkeypatch):
    from torchstn.experiments.reports import reproduce as rep

    base = rep.addition_base(epochs=1, train_size=256, test_size=64, batch_size=64)
    assert base.task.name == "mnist-addition" and base.optim.optimizer == "adamw"
    table = rep.run_addition(tmp_path, models=["fcn", "2xst-fcn-tps"], base=base,
                             data_dir=data_dir, progress=False)
    ours = json.loads((tmp_path / "2xst-fcn-tps" / "seed0" / "metrics.json").read_text())
    assert f"| 2xst-fcn-tps | 477,075 | {ours['test_error']:.2f} | 5.8 |" in table
    assert (tmp_path / "addition.md").read_text() == table
    # The transformers' rate is not part of a model without one: the finished FCN run
    # counts under any loc_lr_mult, the 2xST-FCN run only under its own.
    assert base.optim.loc_lr_mult == 0.1
    other = dataclasses.replace(base, optim=dataclasses.replace(base.optim, loc_lr_mult=0.5))
    assert rep.row_config(other, "fcn").optim.loc_lr_mult == 1.0
    assert len(rep.finished_runs(tmp_path / "fcn", 1, rep.row_config(other, "fcn"))) == 1
    assert rep.row_config(base, "2xst-fcn-tps").optim.loc_lr_mult == 0.1
    assert rep.finished_runs(tmp_path / "2xst-fcn-tps", 1,
                             rep.row_config(other, "2xst-fcn-tps")) == []
    calls = []
    monkeypatch.setattr(rep, "train", lambda *a, **k: calls.append(a))
    rep.run_addition(tmp_path, models=["fcn", "2xst-fcn-tps"], base=base, data_dir=data_dir,
                     progress=False)
    assert calls == []  # finished: skipped
    with pytest.raises(ValueError, match="models must be among"):
        rep.run_addition(tmp_path, models=["st-cnn-affine"], base=base)
    seen = []
    monkeypatch.setattr(rep, "run_rows",
                        lambda name, out, base, **kw: seen.append((name, base)) or "t")
    assert main(["reproduce", "addition", "--out", str(tmp_path), "--epochs", "3"]) == 0
    assert seen[0] == ("addition", rep.addition_base(epochs=3).resolved())
    assert main(["reproduce", "addition", "--out", str(tmp_path)]) == 0
    recipe = seen[-1][1]  # the addition's own recipe (docs/experiments/addition.md)
    assert recipe.train.epochs == 64 and recipe.optim.loc_lr_mult == 0.1
    seen.pop()
    assert main(["reproduce", "mnist3d", "--out", str(tmp_path), "--size", "40"]) == 0
    assert seen[1] == ("mnist3d", rep.experiment_base("mnist3d", size=40).resolved())
    assert seen[1][1].optim.optimizer == "adamw" and seen[1][1].task.name == "mnist3d"


def test_an_experiment_recipe_overrides_table1s_and_flags_override_both(monkeypatch):
    import dataclasses

    from torchstn.experiments.reports import reproduce as rep

    own = dataclasses.replace(rep.EXPERIMENTS["addition"], recipe=(("epochs", 7),
                                                                   ("lr", 1e-3)))
    monkeypatch.setitem(rep.EXPERIMENTS, "addition", own)
    base = rep.addition_base().resolved()
    assert (base.train.epochs, base.optim.lr) == (7, 1e-3)
    assert base.optim.weight_decay == rep.TABLE1_RECIPE["weight_decay"]  # the rest: Table 1's
    assert rep.addition_base(epochs=3).resolved().train.epochs == 3
    assert rep.experiment_base("mnist3d").resolved().train.epochs == rep.TABLE1_RECIPE["epochs"]


def test_the_table_caption_counts_the_test_pairs_it_scored(tmp_path):
    from torchstn.experiments.reports.reproduce import addition_base, rows_markdown

    for test_size, said in ((500, "500 test pairs"), (None, "10,000 test pairs")):
        table = rows_markdown("addition", tmp_path, ["fcn"], 1,
                              addition_base(test_size=test_size))
        assert f"the sum of two RTS-distorted digits, {said})" in table
