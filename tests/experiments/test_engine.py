import dataclasses
import json

import pytest
import torch

import torchstn as ts
from torchstn.experiments import load_run, make_config, train
from torchstn.experiments.cli import main
from torchstn.experiments.engine import (
    build_optimizer,
    evaluate,
    load_checkpoint,
    loop,
    parameter_groups,
    read_checkpoint_meta,
)
from torchstn.experiments.models import build_model
from torchstn.experiments.reports.reproduce import run_table1, table1_markdown
from torchstn.experiments.tasks import Task

TINY = dict(distortion="rts", model="st-cnn-affine", epochs=2, train_size=384, test_size=96,
            batch_size=128)


def _strip(history):
    return [{k: v for k, v in h.items() if "seconds" not in k and k != "images_per_s"}
            for h in history]


def test_cli_train_eval_show(data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--distortion", "rts", "--model", "st-cnn-affine",
            "--epochs", "1", "--train-size", "256", "--test-size", "64", "--seed", "3",
            "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_error"] <= 100 and metrics["epochs_done"] == 1
    assert metrics["task"] == "distorted-digits" and metrics["model"] == "st-cnn-affine"
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["task"]["train_size"] == 256
    assert config["task"]["st_downsample"] is True  # resolved, not left to the default
    assert read_checkpoint_meta(out / "checkpoint.safetensors")["config"] == config
    for name in ("transformer.png", "curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "metrics.csv").read_text().startswith("epoch,lr,train_loss")
    capsys.readouterr()
    # eval and show find the data the run was trained from without --data-dir.
    monkeypatch.delenv("TORCHSTN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert main(["eval", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"error {metrics['test_error']:.4f}" in printed
    (out / "transformer.png").unlink()
    assert main(["show", str(out)]) == 0
    assert (out / "transformer.png").is_file()
    # A second train into the same folder without --resume is refused.
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_eval_recomputes_from_the_checkpoint(data_dir, tmp_path):
    metrics = train(make_config(**TINY), tmp_path, data_dir=data_dir, progress=False,
                    figures=False)
    cfg, task, model, meta = load_run(tmp_path, data_dir=data_dir)
    assert cfg.task.model == "st-cnn-affine" and meta["epoch"] == 2
    assert evaluate(task, model)["test_error"] == metrics["test_error"]


def test_resume_ends_exactly_like_an_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    full = train(make_config(**TINY), tmp_path / "full", data_dir=data_dir, progress=False,
                 figures=False)

    real_save = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(**TINY), tmp_path / "cut", data_dir=data_dir, progress=False,
              figures=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert read_checkpoint_meta(tmp_path / "cut" / "checkpoint.safetensors")["epoch"] == 1
    resumed = train(make_config(**TINY), tmp_path / "cut", data_dir=data_dir, resume=True,
                    progress=False, figures=False)
    torch.set_num_threads(threads)
    assert _strip(resumed["history"]) == _strip(full["history"])
    a = load_run(tmp_path / "full", data_dir=data_dir)[2]
    b = load_run(tmp_path / "cut", data_dir=data_dir)[2]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    # The optimizer state is in the checkpoint too.
    cfg = make_config(**TINY).resolved()
    opt = build_optimizer(b, cfg.optim)
    load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors", b, opt)
    assert all("exp_avg" in s for s in opt.state.values())


def test_stop_after_then_resume_equals_one_run(data_dir, tmp_path):
    cfg = make_config(**{**TINY, "model": "st-fcn-affine", "epochs": 3})
    full = train(cfg, tmp_path / "full", data_dir=data_dir, progress=False, figures=False)
    part = train(cfg, tmp_path / "cut", data_dir=data_dir, progress=False, figures=False,
                 stop_after=1)
    assert part["epochs_done"] == 1
    rest = train(cfg, tmp_path / "cut", data_dir=data_dir, progress=False, figures=False,
                 resume=True)
    assert _strip(rest["history"]) == _strip(full["history"])
    with pytest.raises(ValueError, match="stop_after must be an int >= 1 or None, got 0"):
        train(cfg, tmp_path / "x", data_dir=data_dir, stop_after=0)


def test_resume_refuses_a_different_configuration(data_dir, tmp_path):
    train(make_config(**{**TINY, "epochs": 1}), tmp_path, data_dir=data_dir, progress=False,
          figures=False)
    with pytest.raises(ValueError, match=r"holds a run with a different configuration \(optim.lr: "
                                         r"0.001 saved, 0.5 given\)"):
        train(make_config(**{**TINY, "epochs": 1, "lr": 0.5}), tmp_path, data_dir=data_dir,
              resume=True, progress=False, figures=False)


def test_a_run_moves_between_devices(data_dir, tmp_path):
    # A run started on a GPU (its checkpoint and config.json say cuda) resumes on the CPU
    # and counts in a table built for the CPU; each epoch records where it ran.
    from safetensors.torch import load_file, save_file

    from torchstn.experiments.reports.reproduce import finished_runs

    cfg = make_config(**{**TINY, "epochs": 2})
    train(cfg, tmp_path / "seed0", data_dir=data_dir, progress=False, figures=False,
          stop_after=1)
    ckpt = tmp_path / "seed0" / "checkpoint.safetensors"
    meta = read_checkpoint_meta(ckpt)
    meta["config"]["train"]["device"] = "cuda"
    meta["history"][0]["device"] = "cuda"
    save_file(load_file(str(ckpt)), str(ckpt), metadata={"torchstn": json.dumps(meta)})
    metrics = train(cfg, tmp_path / "seed0", data_dir=data_dir, resume=True, progress=False,
                    figures=False)
    assert [h["device"] for h in metrics["history"]] == ["cuda", "cpu"]
    saved = json.loads((tmp_path / "seed0" / "config.json").read_text())
    saved["train"]["device"] = "cuda"
    (tmp_path / "seed0" / "config.json").write_text(json.dumps(saved))
    assert [r["epochs_done"] for r in finished_runs(tmp_path, 1, cfg.resolved())] == [2]
    # Anything else that differs still keeps the run out of the table.
    other = make_config(**{**TINY, "epochs": 2, "lr": 0.5}).resolved()
    assert finished_runs(tmp_path, 1, other) == []


def test_resume_refuses_a_run_of_another_task(data_dir, tmp_path):
    train(make_config(**{**TINY, "epochs": 1}), tmp_path, data_dir=data_dir, progress=False,
          figures=False)
    ckpt = tmp_path / "checkpoint.safetensors"
    meta = read_checkpoint_meta(ckpt)
    meta["config"]["task"]["name"] = "mnist-addition"  # as a later task's run would say
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(ckpt)), str(ckpt), metadata={"torchstn": json.dumps(meta)})
    with pytest.raises(ValueError, match="holds a run of task 'mnist-addition', but the given "
                                         "configuration is of task 'distorted-digits'"):
        train(make_config(**{**TINY, "epochs": 1}), tmp_path, data_dir=data_dir, resume=True,
              progress=False, figures=False)


def test_optimizer_groups_hold_every_transformer_apart():
    """Found by type: two transformers in series, one nested in a Sequential."""
    stn1 = ts.SpatialTransformer(None, "affine", in_channels=1)
    stn2 = ts.SpatialTransformer(None, "translation", in_channels=4)
    model = torch.nn.Sequential(stn1, torch.nn.Conv2d(1, 4, 3), torch.nn.Sequential(stn2))
    model(torch.rand(1, 1, 12, 12))  # the default localisation heads are lazy
    assert ts.find_transformers(model) == [stn1, stn2]
    rest, loc = parameter_groups(model, 0.1)
    assert {id(p) for p in loc["params"]} == {id(p) for p in [*stn1.parameters(),
                                                               *stn2.parameters()]}
    assert [id(p) for p in rest["params"]] == [id(p) for p in model[1].parameters()]
    assert loc["lr_mult"] == 0.1 and rest["lr_mult"] == 1.0
    assert len(parameter_groups(build_model("cnn", 28), 0.1)) == 1  # no transformer


def test_the_engine_runs_a_task_it_knows_nothing_about(tmp_path):
    """A regression task with its own batches, loss and metrics, through the same loop."""
    from dataclasses import dataclass

    from torchstn.experiments import TASKS
    from torchstn.experiments.config import config_from_dict

    @dataclass
    class LineConfig:
        name: str = "line"
        points: int = 64

    class Line(Task):
        """Fit y = 3x - 1."""

        name, Config = "line", LineConfig

        def build_model(self):
            return torch.nn.Linear(1, 1)

        def num_train_examples(self):
            return self.cfg.points

        def train_batches(self, epoch, batch_size, *, rank=0, world=1):
            x = torch.linspace(-1, 1, self.cfg.points)[:, None]
            for s in range(0, len(x), batch_size):
                yield x[s : s + batch_size], 3 * x[s : s + batch_size] - 1

        def train_step(self, model, batch):
            x, y = batch
            loss = torch.nn.functional.mse_loss(model(x), y)
            return loss, {"loss": loss.detach().double() * len(x), "count": len(x)}

        def train_metrics(self, sums):
            return {"train_loss": sums["loss"] / sums["count"]}

        def evaluate(self, model, *, rank=0, world=1):
            x = torch.linspace(-1, 1, 11)[:, None]
            with torch.no_grad():
                err = (model(x) - (3 * x - 1)).abs().max().item()
            return {"err": err, "count": 1}

        def eval_metrics(self, sums):
            return {"test_max_error": sums["err"] / sums["count"]}

    TASKS.add("line", Line)
    try:
        cfg = config_from_dict({"task": {"name": "line", "points": 64},
                                "train": {"epochs": 30, "batch_size": 16},
                                "optim": {"optimizer": "sgd", "lr": 0.3, "momentum": 0.0},
                                "schedule": {"lr_milestones": []}})
        metrics = train(cfg, tmp_path, progress=False)
    finally:
        TASKS._entries.pop("line")
    assert metrics["task"] == "line" and metrics["test_max_error"] < 1e-3
    assert (tmp_path / "curves.png").is_file() is False  # the task draws no figures
    assert json.loads((tmp_path / "config.json").read_text())["task"] == {"name": "line",
                                                                          "points": 64}


def test_reproduce_table1_skips_finished_runs(data_dir, tmp_path, monkeypatch):
    base = make_config(epochs=1, train_size=128, test_size=32, batch_size=64).resolved()
    table = run_table1(tmp_path, distortions=["r"], models=["fcn", "st-fcn-affine"],
                       base=base, data_dir=data_dir, progress=False)
    assert "| FCN | " in table and "| 2.1 |" in table  # the paper's FCN R error beside ours
    ours = json.loads((tmp_path / "r" / "fcn" / "seed0" / "metrics.json").read_text())
    assert f"| FCN | {ours['test_error']:.2f} | 2.1 |" in table
    calls = []
    monkeypatch.setattr("torchstn.experiments.reports.reproduce.train",
                        lambda *a, **k: calls.append(a))
    again = run_table1(tmp_path, distortions=["r"], models=["fcn", "st-fcn-affine"],
                       base=base, data_dir=data_dir, progress=False)
    assert calls == [] and again == table
    assert (tmp_path / "table1.md").read_text() == table
    partial = table1_markdown(tmp_path, ["r", "rts"], ["fcn"], 1, base)
    assert "| FCN | " in partial and "| - | 5.2 |" in partial
    # Cells the paper does not report (projective on TC) are not run.
    calls.clear()
    run_table1(tmp_path, distortions=["tc"], models=["st-fcn-projective"], base=base,
               data_dir=data_dir, progress=False)
    assert calls == []


def test_reproduce_table1_runs_seed_by_seed_and_refuses_another_recipes_run(
        data_dir, tmp_path, monkeypatch):
    base = make_config(epochs=1, train_size=64, test_size=32, batch_size=32).resolved()
    order = []

    def fake_train(cfg, run, **kwargs):
        order.append((cfg.task.distortion, cfg.task.model, cfg.train.seed))

    monkeypatch.setattr("torchstn.experiments.reports.reproduce.train", fake_train)
    run_table1(tmp_path, distortions=["r", "rts"], models=["fcn", "cnn"], seeds=2, base=base,
               data_dir=data_dir, progress=False)
    cells = [("r", "fcn"), ("r", "cnn"), ("rts", "fcn"), ("rts", "cnn")]
    assert order == [(*c, 0) for c in cells] + [(*c, 1) for c in cells]
    monkeypatch.undo()
    run_table1(tmp_path, distortions=["r"], models=["fcn"], base=base, data_dir=data_dir,
               progress=False)
    other = dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=0.5))
    with pytest.raises(ValueError, match=r"r/fcn/seed0 holds a run with a different "
                                         r"configuration \(optim.lr: 0.001 saved, 0.5 given"):
        run_table1(tmp_path, distortions=["r"], models=["fcn"], base=other,
                   data_dir=data_dir, progress=False)
    # Nor does the table of the other recipe count it.
    assert "| FCN | - | 2.1 |" in table1_markdown(tmp_path, ["r"], ["fcn"], 1, other)
    assert "| FCN | - | 2.1 |" not in table1_markdown(tmp_path, ["r"], ["fcn"], 1, base)


def test_reproduce_table1_trains_the_chosen_recipe_under_the_users_settings(tmp_path,
                                                                           monkeypatch):
    from torchstn.experiments.cli import main
    from torchstn.experiments.reports.reproduce import TABLE1_RECIPE

    seen = []
    monkeypatch.setattr("torchstn.experiments.reports.reproduce.run_table1",
                        lambda out, base, **kw: seen.append(base) or "table")
    assert main(["reproduce", "table1", "--out", str(tmp_path)]) == 0
    recipe = make_config(**TABLE1_RECIPE).resolved()
    assert seen[0] == recipe and recipe.optim.optimizer == "adamw"
    (tmp_path / "c.toml").write_text("[optim]\nlr = 0.002\n[train]\nepochs = 3\n")
    assert main(["reproduce", "table1", "--out", str(tmp_path), "--config",
                 str(tmp_path / "c.toml"), "--epochs", "2"]) == 0
    # The file's lr and the flag's epochs win; the rest of the recipe stays.
    assert seen[1] == make_config(**{**TABLE1_RECIPE, "lr": 0.002, "epochs": 2}).resolved()


def test_written_files_get_the_umask_mode(tmp_path):
    """Atomic writes go through mkstemp (owner-only), and safetensors writes its own file
    with mode 0o600; results get a plain file's mode whatever wrote them."""
    import os

    from torchstn.experiments.engine import atomic_write_text, save_checkpoint

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2), None, {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.safetensors").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.safetensors"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_makes_the_data_there_and_matches_the_cpu(data_dir, tmp_path):
    """Same config on both devices: the same data stream (drawn on the CPU, warped where
    the digits live), so the same errors up to the devices' rounding."""
    cfg = dict(TINY, epochs=1)
    cpu = train(make_config(**cfg), tmp_path / "cpu", data_dir=data_dir, progress=False,
                figures=False)
    gpu = train(make_config(**cfg, device="cuda"), tmp_path / "gpu", data_dir=data_dir,
                progress=False)
    assert abs(cpu["test_error"] - gpu["test_error"]) <= 3.0
    _, task, model, _ = load_run(tmp_path / "gpu", data_dir=data_dir, device="cuda")
    assert next(model.parameters()).is_cuda
    assert task.data.train_x.is_cuda and task.data.clutter_pool.is_cuda  # digits live there
    x, y = next(iter(task.train_batches(0, 64)))
    assert x.is_cuda and y.is_cuda  # and the batches are made there
    assert evaluate(task, model)["test_error"] == gpu["test_error"]


def test_a_resumed_run_removes_what_a_killed_write_left(data_dir, tmp_path):
    cfg = make_config(**{**TINY, "model": "fcn", "epochs": 1})
    train(cfg, tmp_path, data_dir=data_dir, progress=False, figures=False)
    # A process killed inside an atomic write leaves its temporary file, never a half file.
    (tmp_path / ".checkpoint.safetensors.torchstn-tmp-k3j_x9a2.safetensors").write_bytes(b"h")
    (tmp_path / ".metrics.json.torchstn-tmp-0abcdefg.json").write_text("{")
    users = [".env-defaults", ".config-original.json", ".backup-20240101.tar", "notes.txt"]
    for name in users:  # a user's files, some named like other programs' temporaries
        (tmp_path / name).write_text("mine")
    train(cfg, tmp_path, data_dir=data_dir, progress=False, figures=False, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "checkpoint.safetensors", "config.json", "metrics.csv", "metrics.json", *users])


def test_atomic_writes_name_their_temporaries_so_that_only_they_are_removed(tmp_path):
    from torchstn.experiments._files import atomic_write, remove_temps

    seen = []
    atomic_write(tmp_path / "fig.png", lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    name = seen[0].rsplit("/", 1)[1]
    assert name.startswith(".fig.png.torchstn-tmp-") and name.endswith(".png")
    (tmp_path / name).write_text("left by a killed write")
    assert [p.name for p in remove_temps(tmp_path)] == [name]
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_table_cells_say_how_many_seeds_finished():
    from torchstn.experiments.reports.reproduce import table_cell as _cell
    assert _cell([], 3) == "-"
    assert _cell([1.25], 1) == "1.25"
    assert _cell([1.0, 2.0, 3.0], 3) == "2.00 ± 1.00"
    assert _cell([1.0, 2.0], 3) == "1.50 ± 0.71 (n=2)"
    assert _cell([0.5], 3) == "0.50 (n=1)"


class _Inputs:
    """A stand-in task: gives ``x`` as its test inputs."""

    def __init__(self, x):
        self.x = x

    def example_inputs(self, n):
        return (self.x[:n],)


def test_coverage_finds_a_transformer_that_reads_only_padding(capsys):
    alive = ts.SpatialTransformer(torch.nn.Flatten(), "affine", loc_features=64)
    dead = ts.SpatialTransformer(torch.nn.Flatten(), "affine", loc_features=64)
    half = ts.SpatialTransformer(torch.nn.Flatten(), "affine", loc_features=64)
    with torch.no_grad():
        dead.head.bias.copy_(torch.tensor([1.0, 0, 5, 0, 1, 0]))  # shifted 5 half-widths
        half.head.bias.copy_(torch.tensor([1.0, 0, 1, 0, 1, 0]))  # shifted one half-width
    model = ts.ParallelTransformer.from_transformers([alive, dead, half])
    inside = loop.transformer_coverage(_Inputs(torch.rand(3, 1, 8, 8)), model)
    # An 8x8 output at pixel centres (+-7/8, ...): shifted by 1, the 4 columns with x < 0
    # land inside [-1, 1], the other 4 outside.
    assert inside == {"st1_inside": 100.0, "st2_inside": 0.0, "st3_inside": 50.0}
    loop._warn_dead(inside, 3)
    err = capsys.readouterr().err
    assert "after epoch 3, spatial transformer 2 of 3 reads inside its input at only 0.00%" in err
    assert "transformer 1 " not in err and "transformer 3 " not in err
    assert loop.transformer_coverage(_Inputs(torch.rand(3, 1, 8, 8)),
                                     torch.nn.Flatten()) == {}


def test_training_records_where_the_transformer_reads(data_dir, tmp_path):
    metrics = train(make_config(**{**TINY, "epochs": 1}), tmp_path, data_dir=data_dir,
                    progress=False, figures=False)
    share = metrics["history"][0]["st1_inside"]
    assert 0 < share <= 100
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "st1_inside" in header


def test_metrics_csv_holds_every_key_of_a_resumed_history(tmp_path):
    class _Task:
        name = "t"

        def summary(self):
            return {}

    # Epoch 1 from an older torchstn, epoch 2 recording the transformer's coverage.
    history = [{"epoch": 1, "test_error": 5.0, "seconds": 1.0},
               {"epoch": 2, "test_error": 4.0, "seconds": 1.0, "st1_inside": 97.5}]
    loop._write_metrics(tmp_path, _Task(), history, 10, ["test_error"])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,test_error,seconds,st1_inside", "1,5.0,1.0,", "2,4.0,1.0,97.5"]


def test_precision_auto_takes_bf16_only_where_native(data_dir, tmp_path, monkeypatch,
                                                    capsys):
    import torchstn.experiments.engine.loop as loop

    # oneDNN says "bf16 supported" on any AVX-512 CPU, where it emulates it: not asked.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for avx512_bf16, amx, want in ((False, False, "fp32"), (True, False, "bf16"),
                                   (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert loop.native_bf16("cpu") is (want == "bf16")
        assert loop.resolve_precision("auto", torch.device("cpu")) == want
        assert loop.resolve_precision("fp32", "cpu") == "fp32"
        assert loop.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto, got 'fp16'"):
        loop.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cfg = make_config(**{**TINY, "epochs": 1, "precision": "auto"})
    assert cfg.resolved().train.channels_last is None  # decided with the precision
    metrics = train(cfg, tmp_path / "auto", data_dir=data_dir, progress=False, figures=False)
    assert metrics["history"][-1]["precision"] == "fp32"
    # A bf16 or fp32 run is one of auto's runs (it counts in auto's tables) ...
    from torchstn.experiments.reports.reproduce import finished_runs

    (tmp_path / "grid").mkdir()
    train(make_config(**{**TINY, "epochs": 1, "precision": "bf16"}), tmp_path / "grid" / "seed0",
          data_dir=data_dir, progress=False, figures=False)
    assert len(finished_runs(tmp_path / "grid", 1, cfg.resolved())) == 1
    # ... but a fixed precision is part of the recipe.
    fp32 = make_config(**{**TINY, "epochs": 1, "precision": "fp32"}).resolved()
    assert finished_runs(tmp_path / "grid", 1, fp32) == []
    # A bf16 run resumed under auto here continues in fp32, and says so.
    two = {**TINY, "epochs": 2}
    train(make_config(**two, precision="bf16"), tmp_path / "moved", data_dir=data_dir,
          progress=False, figures=False, stop_after=1)
    capsys.readouterr()
    metrics = train(make_config(**two, precision="auto"), tmp_path / "moved",
                    data_dir=data_dir, progress=False, figures=False, resume=True)
    assert [h["precision"] for h in metrics["history"]] == ["bf16", "fp32"]
    assert "trained its first 1 epochs in bf16 and continues in fp32" in capsys.readouterr().err


def test_eval_scores_in_the_trained_precision_unless_told(data_dir, tmp_path, capsys):
    from torchstn.experiments.cli import main

    train(make_config(**{**TINY, "epochs": 1, "precision": "bf16"}), tmp_path, data_dir=data_dir,
          progress=False, figures=False)
    assert main(["eval", str(tmp_path), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "scored in bf16; trained in bf16" in out
    recorded = json.loads((tmp_path / "metrics.json").read_text())["test_error"]
    assert f"error {recorded:.4f}" in out.split("(recorded")[0]
    assert main(["eval", str(tmp_path), "--data-dir", str(data_dir), "--precision",
                 "fp32"]) == 0
    assert "scored in fp32; trained in bf16" in capsys.readouterr().out


def test_a_stripped_checkpoint_evaluates_but_does_not_train_on(data_dir, tmp_path):
    from torchstn.experiments.checkpoint import has_optimizer_state, strip_optimizer

    cfg = make_config(**{**TINY, "epochs": 1})
    metrics = train(cfg, tmp_path, data_dir=data_dir, progress=False, figures=False)
    ckpt = tmp_path / "checkpoint.safetensors"
    before = ckpt.stat().st_size
    assert has_optimizer_state(ckpt)
    saved = strip_optimizer(ckpt)
    assert saved > 0 and ckpt.stat().st_size == before - saved
    assert not has_optimizer_state(ckpt) and strip_optimizer(ckpt) == 0
    _, task, model, meta = load_run(tmp_path, data_dir=data_dir)
    assert meta["weights_only"] and meta["history"] == metrics["history"]
    assert evaluate(task, model)["test_error"] == pytest.approx(metrics["test_error"], abs=1e-9)
    with pytest.raises(ValueError, match="holds weights only .* stripped when the run finished "
                                         "at epoch 1"):
        train(make_config(**{**TINY, "epochs": 2}), tmp_path, data_dir=data_dir, resume=True,
              progress=False, figures=False)
