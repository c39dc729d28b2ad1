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
