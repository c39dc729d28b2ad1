"""ONNX export (torchstn.export.export_onnx, torchstn export) checked in onnxruntime."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import torchstn as ts

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from torchstn.export import OPSET, export_onnx  # noqa: E402

FAMILIES_2D = ["translation", "attention", "rotation", "similarity", "affine", "projective",
               "tps"]


class _Every(nn.Module):
    """One transformer per (mode, padding, backend) of a family, in one model."""

    def __init__(self, family):
        super().__init__()
        self.keys, stns = [], []
        backends = ("auto", "torch") if family == "affine" else ("auto",)
        for mode in ("bilinear", "nearest"):
            for padding in ("zeros", "border"):
                for backend in backends:  # auto: numba where it applies
                    torch.manual_seed(len(stns))
                    stn = ts.SpatialTransformer(
                        nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 10, 16), nn.Tanh()),
                        family, out_size=(9, 7), mode=mode, padding_mode=padding,
                        loc_features=16, backend=backend)
                    with torch.no_grad():
                        stn.head.weight.normal_(0, 0.1)
                    stns.append(stn)
                    self.keys.append(f"{family} {mode} {padding} {backend}")
        self.stns = nn.ModuleList(stns)

    def forward(self, x):
        return tuple(stn(x) for stn in self.stns)


def _run(path, *inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def _check_every(model, path):
    x = torch.rand(5, 2, 12, 10)  # another batch size than the one exported
    got = _run(path, x)
    with torch.no_grad():
        want = model(x)
    assert len(got) == len(want) == len(model.keys)
    for key, g, w in zip(model.keys, got, want):
        assert g.shape == (5, 2, 9, 7), key
        assert np.abs(g - w.numpy()).max() <= 1e-5, key


# One dynamo export a family (a model of all seven exports 2x slower than seven models).
# The default run exports one family per form of the fused operator's argument: theta of
# 6 entries (affine), 8 (projective), a whole matrix (rotation; translation, attention and
# similarity take the same path) and the reference path (tps); `-m slow` adds the rest.
_DEFAULT_FAMILIES = ("affine", "projective", "rotation", "tps")


@pytest.mark.parametrize("family", [f if f in _DEFAULT_FAMILIES else
                                    pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES_2D])
def test_the_standard_torch_onnx_export_writes_every_family_mode_and_padding(family,
                                                                          tmp_path):
    """The plain call, as Lightning or a deployment script makes it: no torchstn helper.
    The fused operators decompose to the reference path (torchstn.ops._reference)."""
    model = _Every(family).eval()
    x = torch.rand(3, 2, 12, 10)
    program = torch.onnx.export(model, (x,), dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(tmp_path / "plain.onnx"))
    _check_every(model, tmp_path / "plain.onnx")


class _EveryFamily(nn.Module):
    """:class:`_Every` of each 2-D family, in one model (one trace covers them all)."""

    def __init__(self):
        super().__init__()
        self.parts = nn.ModuleList(_Every(f) for f in FAMILIES_2D)
        self.keys = [k for part in self.parts for k in part.keys]

    def forward(self, x):
        return tuple(y for part in self.parts for y in part(x))


def test_the_legacy_torchscript_exporter_writes_every_family(tmp_path):
    """``dynamo=False`` traces: the warps take the reference path while tracing."""
    import warnings

    model = _EveryFamily().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notice
        torch.onnx.export(model, (torch.rand(3, 2, 12, 10),), str(tmp_path / "ts.onnx"),
                          dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    _check_every(model, tmp_path / "ts.onnx")


def test_export_onnx_matches_eager_in_onnxruntime(tmp_path):
    family = "affine"  # both backends, each mode and padding; the rest: the tests above
    model = _Every(family).eval()
    path = export_onnx(model, (torch.rand(3, 2, 12, 10),), tmp_path / "every.onnx")
    import onnx

    assert onnx.load(str(path)).opset_import[0].version == OPSET
    assert [p.name for p in tmp_path.iterdir()] == ["every.onnx"]  # no temporary left
    assert len(model.keys) == 4 * (2 if family == "affine" else 1)
    _check_every(model, path)


def test_nonfinite_parameters_give_nan_in_onnx_too(tmp_path):
    """One image's parameters are NaN (its input holds a NaN): that image alone is NaN."""
    stn = ts.SpatialTransformer(nn.Flatten(), "affine", loc_features=16).eval()
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.01)
    path = export_onnx(stn, (torch.rand(2, 1, 4, 4),), tmp_path / "nan.onnx")
    x = torch.rand(3, 1, 4, 4)
    x[1, 0, 2, 2] = float("nan")
    (out,) = _run(path, x)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_bad_arguments_are_clear_errors(tmp_path):
    stn = ts.SpatialTransformer(nn.Flatten(), "affine", loc_features=16).eval()
    with pytest.raises(ValueError, match=r"batch of at least 2 .* got shapes \[\(1, 1, 4, 4\)\]"):
        export_onnx(stn, (torch.rand(1, 1, 4, 4),), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="args must be a tuple of example input tensors"):
        export_onnx(stn, torch.rand(2, 1, 4, 4), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_exported_trained_run_gets_the_test_error_of_eval(data_dir, tmp_path, capsys):
    from torchstn.experiments.cli import main
    from torchstn.experiments.engine import load_run

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(data_dir), "--model",
                 "st-cnn-affine", "--distortion", "rts", "--epochs", "1", "--train-size",
                 "1000", "--test-size", "500", "--batch-size", "100", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx")]) == 0
    cap = capsys.readouterr()
    said = cap.out
    assert f"ONNX opset {OPSET}" in said and "onnxruntime matches PyTorch" in said
    assert "torchvision" not in said + cap.err  # no notes a user cannot act on
    _, task, model, _ = load_run(run)
    x, y = task.data.test_set()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: (x.float() / 255).numpy()})[0]
    error = 100.0 * float((logits.argmax(1) != y.numpy()).mean())
    recorded = json.loads((run / "metrics.json").read_text())
    assert error == pytest.approx(recorded["test_error"], abs=1e-9)


def test_export_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    from torchstn.experiments.cli import main

    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "no checkpoint.safetensors" in capsys.readouterr().err


def test_plain_torch_onnx_export_of_the_reference_path(tmp_path):
    """Without export_onnx: torch.onnx.export itself, on a model on backend="torch"."""
    torch.manual_seed(0)
    stn = ts.SpatialTransformer(nn.Flatten(), "projective", loc_features=36,
                                backend="torch").eval()
    with torch.no_grad():
        stn.head.weight.normal_(0, 0.05)
    x = torch.rand(2, 1, 6, 6)
    program = torch.onnx.export(stn, (x,), dynamo=True, opset_version=OPSET,
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    program.save(str(tmp_path / "plain.onnx"))
    other = torch.rand(4, 1, 6, 6)
    (got,) = _run(tmp_path / "plain.onnx", other)
    with torch.no_grad():
        assert np.abs(got - stn(other).numpy()).max() <= 1e-5
