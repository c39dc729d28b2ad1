"""The recipe options: validation split, AdamW, the one-cycle schedule, bf16 autocast and
channels-last."""

import json
import math

import pytest
import torch

from torchstn.experiments import load_run, make_config, train
from torchstn.experiments.data.idx import load_idx_dataset
from torchstn.experiments.data.mnist import DistortedMNIST, validation_split
from torchstn.experiments.engine import evaluate
from torchstn.experiments.schedules import SCHEDULES

TINY = dict(distortion="rts", model="st-cnn-affine", epochs=2, train_size=384, test_size=96,
            batch_size=128)


def test_validation_split_is_fixed_disjoint_and_complete():
    a_train, a_val = validation_split(60000, 10000)
    b_train, b_val = validation_split(60000, 10000)
    assert torch.equal(a_val, b_val) and len(a_val) == 10000 and len(a_train) == 50000
    assert len(set(a_train.tolist()) & set(a_val.tolist())) == 0
    assert len(set(a_train.tolist()) | set(a_val.tolist())) == 60000


def test_validation_set_holds_the_held_out_training_digits(data_dir):
    data = DistortedMNIST("mnist", "r", data_dir=data_dir, val_size=1000, seed=4)
    train_x, _ = load_idx_dataset("mnist", "train", data_dir)
    train_rows, val_rows = validation_split(len(train_x), 1000)
    assert torch.equal(data.test_x, train_x[val_rows])  # scored on held-out digits
    assert torch.equal(data.train_x, train_x[train_rows])  # never trained on them
    other = DistortedMNIST("mnist", "r", data_dir=data_dir, val_size=1000, seed=9)
    assert torch.equal(data.test_set()[0], other.test_set()[0])  # whatever the run's seed
    with pytest.raises(ValueError, match="val_size must be between 1 and 59999"):
        DistortedMNIST("mnist", "r", data_dir=data_dir, val_size=60000)


def test_a_validation_run_reports_val_metrics_only(data_dir, tmp_path):
    metrics = train(make_config(**{**TINY, "val_size": 500, "test_size": 100}), tmp_path,
                    data_dir=data_dir, progress=False, figures=False)
    assert "val_error" in metrics and "test_error" not in metrics
    assert all("test_error" not in h for h in metrics["history"])


def _cfg(**kw):
    return make_config(**{**TINY, "epochs": 10, "schedule": "onecycle", "lr": 1.0, **kw})


def test_onecycle_warms_up_then_falls_to_zero():
    cfg = _cfg(warmup_epochs=2.0).resolved()
    rate = SCHEDULES.get("onecycle")
    assert rate(1.0, 0.0, cfg) == pytest.approx(0.04)
    assert rate(1.0, 1.0, cfg) == pytest.approx(0.52)
    assert rate(1.0, 2.0, cfg) == pytest.approx(1.0)
    assert rate(1.0, 6.0, cfg) == pytest.approx(0.5)  # half-way down the cosine
    assert rate(1.0, 10.0, cfg) == pytest.approx(0.0, abs=1e-12)
    ts = [i / 7 for i in range(71)]
    rates = [rate(1.0, t, cfg) for t in ts]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    assert rate(1.0, 3.0, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))


def test_the_rate_is_set_every_step(data_dir, tmp_path, monkeypatch):
    import torchstn.experiments.engine.loop as loop

    seen = []
    real = loop.set_lr
    monkeypatch.setattr(loop, "set_lr", lambda opt, cfg, t: seen.append(t) or real(opt, cfg, t))
    train(make_config(**{**TINY, "schedule": "onecycle", "optimizer": "adamw",
                         "weight_decay": 0.05}), tmp_path, data_dir=data_dir,
          progress=False, figures=False)
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3])  # 3 steps an epoch


def test_bf16_run_uses_autocast_and_channels_last_and_scores_as_eval(data_dir, tmp_path,
                                                                    monkeypatch):
    import torchstn.experiments.tasks.digits as digits

    dtypes = []
    real = digits.DistortedDigits.train_step

    def spy(self, model, batch):
        loss, sums = real(self, model, batch)
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                      else None)
        return loss, sums

    monkeypatch.setattr(digits.DistortedDigits, "train_step", spy)
    metrics = train(make_config(**{**TINY, "precision": "bf16"}), tmp_path, data_dir=data_dir,
                    progress=False, figures=False)
    assert dtypes == [torch.bfloat16] * 6
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["channels_last"] is True  # resolved from the precision
    cfg, task, model, _ = load_run(tmp_path, data_dir=data_dir)
    assert evaluate(task, model, precision=cfg.train.precision)["test_error"] == \
        metrics["test_error"]
    assert math.isfinite(metrics["history"][-1]["train_loss"])


def test_st_pool_samples_at_full_size_then_pools():
    from torchstn.experiments.engine import count_parameters
    from torchstn.experiments.models import build_model

    sampled = build_model("st-cnn-affine", 42, st_downsample=True)
    pooled = build_model("st-cnn-affine", 42, st_downsample=True, st_pool=True)
    assert count_parameters(sampled) == count_parameters(pooled)  # the same architecture
    assert pooled.stn.out_size == (42, 42) and sampled.stn.out_size == (21, 21)
    x = torch.rand(3, 1, 42, 42)
    pooled.load_state_dict(sampled.state_dict())
    # At the identity, pooling the full-size sample averages 2x2 blocks, as
    # sampling at half size does with bilinear taps between them.
    torch.testing.assert_close(pooled.stn(x).unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)),
                               sampled.stn(x), rtol=0, atol=1e-6)
    assert pooled(x).shape == sampled(x).shape == (3, 10)
