import subprocess
import sys

import torch

import torchstn as ts
from torchstn.experiments.cli import main
from torchstn.experiments.reports.demo import demo_params


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: torchstn" in out and "demo" in out


def test_console_module_runs():
    result = subprocess.run([sys.executable, "-m", "torchstn", "--help"],
                            capture_output=True, text=True, check=True)
    assert "Spatial Transformer Networks" in result.stdout


def test_transforms_command_lists_every_family(capsys):
    assert main(["transforms"]) == 0
    out = capsys.readouterr().out
    for name in ts.list_transforms():
        assert name in out


def test_demo_writes_the_figure_of_real_warps(data_dir, tmp_path, capsys):
    out = tmp_path / "figs" / "demo.png"
    assert main(["demo", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    assert "wrote" in capsys.readouterr().out
    # The pictured outputs are real warps: translation by tx moves the digit's mass.
    from torchstn.experiments.data import load_idx_dataset

    x = load_idx_dataset("mnist", "test", data_dir)[0][0].float()[None, None] / 255
    y = ts.warp(x, demo_params("translation"), "translation")
    cols = torch.arange(28.0)
    centre_in = (x[0, 0].sum(0) * cols).sum() / x.sum()
    centre_out = (y[0, 0].sum(0) * cols).sum() / y.sum()
    # tx = 0.35 normalised = 4.9 pixels: content moves left by that much.
    assert abs((centre_in - centre_out) - 0.35 * 14) < 0.5


def test_demo_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--data-dir", str(tmp_path), "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte[.gz] not found" in err
    assert not (tmp_path / "d.png").exists()


def test_the_command_without_the_experiments_extra_says_what_to_install():
    code = ("import sys; sys.modules['safetensors'] = None\n"
            "from torchstn.__main__ import main\nsys.exit(main(['models']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == ("torchstn: the command line needs the experiments extra: "
                                     "pip install 'torchstn[experiments]' (safetensors is "
                                     "missing)")


def test_interrupted_training_is_a_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    import torchstn.experiments.engine as engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", interrupted)
    assert main(["train", "--out", str(tmp_path / "r")]) == 130
    assert capsys.readouterr().err == "torchstn train: error: interrupted\n"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"")  # an epoch was saved
    assert main(["train", "--out", str(tmp_path / "r")]) == 130
    assert capsys.readouterr().err == ("torchstn train: error: interrupted (the last finished "
                                       "epoch is saved: --resume continues)\n")


TINY_ARGS = ["--model", "fcn", "--distortion", "r", "--train-size", "256", "--test-size",
             "64", "--batch-size", "128", "--no-progress"]


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff" * 64,
                      "empty": b""}[how])


def test_a_damaged_checkpoint_is_one_line_naming_the_file_in_every_command(data_dir, tmp_path,
                                                                          capsys):
    import pytest

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(data_dir), "--epochs", "1",
                 *TINY_ARGS]) == 0
    ckpt = run / "checkpoint.safetensors"
    good = ckpt.read_bytes()
    commands = {
        "eval": ["eval", str(run), "--data-dir", str(data_dir)],
        "show": ["show", str(run), "--data-dir", str(data_dir)],
        "export": ["export", str(run), "--onnx", str(tmp_path / "m.onnx")],
        "train": ["train", "--out", str(run), "--resume", "--data-dir", str(data_dir)],
    }
    for how in ("truncated", "garbage", "empty"):
        for name, argv in commands.items():
            ckpt.write_bytes(good)
            _damage(ckpt, how)
            capsys.readouterr()
            assert main(argv) == 2, (how, name)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "Traceback" not in err, (how, name, err)
            assert f"torchstn {name}: error: {ckpt}: damaged or truncated checkpoint" in err
    assert not (tmp_path / "m.onnx").exists()
    # Weights that do not fit the configuration's model are named too.
    from torchstn.experiments.engine import load_checkpoint

    ckpt.write_bytes(good)
    with pytest.raises(ValueError, match="its weights do not fit the model"):
        load_checkpoint(ckpt, torch.nn.Linear(3, 3))


def test_resume_with_the_run_folder_alone_continues_from_its_saved_configuration(
        data_dir, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(data_dir), "--epochs", "2",
                 "--lr", "0.003", "--stop-after", "1", *TINY_ARGS]) == 0
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and metrics["history"][1]["lr"] > 0
    assert json.loads((run / "config.json").read_text())["optim"]["lr"] == 0.003
    # A flag given beside it still counts: another recipe is refused, naming the key.
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5", "--data-dir",
                 str(data_dir)]) == 2
    assert "optim.lr: 0.003 saved, 0.5 given" in capsys.readouterr().err
    # A run of another task is found by its folder too (no --task needed).
    hn = tmp_path / "hn"
    assert main(["train", "--task", "house-numbers", "--model", "cnn", "--width", "0.05",
                 "--train-size", "32", "--test-size", "16", "--epochs", "2", "--batch-size",
                 "32", "--stop-after", "1", "--out", str(hn), "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    assert main(["train", "--out", str(hn), "--resume", "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    assert json.loads((hn / "metrics.json").read_text())["epochs_done"] == 2


def test_reproduce_has_a_subcommand_per_experiment_of_the_one_table(capsys, monkeypatch):
    import pytest

    from torchstn.experiments.reports import experiments as ex

    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    out = capsys.readouterr().out
    assert list(ex.EXPERIMENT_TABLE) == ["table1", "addition", "mnist3d", "colocalization",
                                         "house-numbers", "svhn",
                                         "augmentation"]
    for name in ex.EXPERIMENT_TABLE:
        assert f"    {name} " in out or f"    {name}\n" in out, name
    # The entry's runner gets the grid's selections and the recipe under the flags.
    seen = {}
    fake = ex.Experiment("table1", "distorted-digits", "t", lambda: {"epochs": 3},
                         lambda out, **kw: seen.update(out=out, **kw) or "the table",
                         (ex.Selection("distortions", "d"),))
    monkeypatch.setitem(ex.EXPERIMENT_TABLE, "table1", fake)
    assert main(["reproduce", "table1", "--distortions", "r", "--out", "x", "--lr",
                 "0.5"]) == 0
    assert seen["out"] == "x" and seen["distortions"] == ["r"] and seen["seeds"] == 1
    assert seen["base"].train.epochs == 3 and seen["base"].optim.lr == 0.5
    assert "the table" in capsys.readouterr().out
