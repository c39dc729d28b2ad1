import json

import pytest
import torch

import torchstn.training as training
from torchstn.checkpoint import load_checkpoint, read_checkpoint_meta
from torchstn.cli import main
from torchstn.reproduce import run_table1, table1_markdown
from torchstn.training import TrainConfig, load_run, train

TINY = dict(distortion="rts", model="st-cnn-affine", epochs=2, train_size=384, test_size=96,
            batch_size=128)


def test_config_resolution_and_errors():
    cfg = TrainConfig(epochs=10, distortion="tc").resolved()
    assert cfg.lr_milestones == [6, 8] and cfg.st_downsample is True
    assert TrainConfig(distortion="r").resolved().st_downsample is False
    with pytest.raises(ValueError, match="model must be one of .* got 'vgg'"):
        TrainConfig(model="vgg").resolved()
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        TrainConfig(epochs=0).resolved()
    with pytest.raises(ValueError, match="distortion must be one of"):
        TrainConfig(distortion="rt").resolved()


def test_cli_train_eval_show(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--distortion", "rts", "--model", "st-cnn-affine",
            "--epochs", "1", "--train-size", "256", "--test-size", "64", "--seed", "3",
            "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_error"] <= 100 and metrics["epochs_done"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["train_size"] == 256
    assert read_checkpoint_meta(out / "checkpoint.safetensors")["config"] == config
    for name in ("transformer.png", "curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "metrics.csv").read_text().startswith("epoch,lr,train_loss")
    capsys.readouterr()
    assert main(["eval", str(out), "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"test error {metrics['test_error']:.2f}%" in printed
    (out / "transformer.png").unlink()
    assert main(["show", str(out), "--data-dir", str(data_dir)]) == 0
    assert (out / "transformer.png").is_file()
    # A second train into the same folder without --resume is refused.
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_eval_recomputes_from_the_checkpoint(data_dir, tmp_path):
    metrics = train(TrainConfig(**TINY), tmp_path, data_dir=data_dir, progress=False,
                    figures=False)
    cfg, model, meta = load_run(tmp_path)
    assert cfg.model == "st-cnn-affine" and meta["epoch"] == 2
    from torchstn.data.mnist import DistortedMNIST

    data = DistortedMNIST("mnist", "rts", data_dir=data_dir, test_size=96)
    _, error = training.evaluate(model, *data.test_set())
    assert error == metrics["test_error"]


def test_resume_ends_exactly_like_an_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    full = train(TrainConfig(**TINY), tmp_path / "full", data_dir=data_dir, progress=False,
                 figures=False)

    real_save = training.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), tmp_path / "cut", data_dir=data_dir, progress=False,
              figures=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert read_checkpoint_meta(tmp_path / "cut" / "checkpoint.safetensors")["epoch"] == 1
    resumed = train(TrainConfig(**TINY), tmp_path / "cut", data_dir=data_dir, resume=True,
                    progress=False, figures=False)
    torch.set_num_threads(threads)

    def strip(history):
        return [{k: v for k, v in h.items() if "seconds" not in k and k != "images_per_s"}
                for h in history]

    assert strip(resumed["history"]) == strip(full["history"])
    a, b = load_run(tmp_path / "full")[1], load_run(tmp_path / "cut")[1]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    # The optimizer state is in the checkpoint too.
    model = load_run(tmp_path / "cut")[1]
    opt = training._optimizer(model, TrainConfig(**TINY).resolved())
    load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors", model, opt)
    assert all("exp_avg" in s for s in opt.state.values())


def test_resume_refuses_a_different_configuration(data_dir, tmp_path):
    train(TrainConfig(**{**TINY, "epochs": 1}), tmp_path, data_dir=data_dir, progress=False,
          figures=False)
    with pytest.raises(ValueError, match="--resume with a different configuration.*'lr'"):
        train(TrainConfig(**{**TINY, "epochs": 1, "lr": 0.5}), tmp_path, data_dir=data_dir,
              resume=True, progress=False, figures=False)


def test_reproduce_table1_skips_finished_runs(data_dir, tmp_path, monkeypatch):
    base = TrainConfig(epochs=1, train_size=128, test_size=32, batch_size=64).resolved()
    table = run_table1(tmp_path, distortions=["r"], models=["fcn", "st-fcn-affine"],
                       base=base, data_dir=data_dir, progress=False)
    assert "| FCN | " in table and "| 2.1 |" in table  # the paper's FCN R error beside ours
    ours = json.loads((tmp_path / "r" / "fcn" / "seed0" / "metrics.json").read_text())
    assert f"| FCN | {ours['test_error']:.2f} | 2.1 |" in table
    calls = []
    monkeypatch.setattr("torchstn.reproduce.train", lambda *a, **k: calls.append(a))
    again = run_table1(tmp_path, distortions=["r"], models=["fcn", "st-fcn-affine"],
                       base=base, data_dir=data_dir, progress=False)
    assert calls == [] and again == table
    assert (tmp_path / "table1.md").read_text() == table
    partial = table1_markdown(tmp_path, ["r", "rts"], ["fcn"], 1, base)
    assert "| FCN | " in partial and "| - | 5.2 |" in partial


def test_written_files_get_the_umask_mode(tmp_path):
    """Atomic writes go through mkstemp (owner-only); results get a plain file's mode."""
    import os

    from torchstn.checkpoint import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
