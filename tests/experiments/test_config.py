import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from torchstn.experiments.cli import build_parser, main
from torchstn.experiments.config import (
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    add_config_flags,
    config_fields,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    flat_overrides,
    load_config_file,
    make_config,
)
from torchstn.experiments.reports.reproduce import TABLE1_CELLS, table1_base, table1_cell
from torchstn.experiments.tasks import TASKS

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "table1"


def _parse(argv):
    return build_parser().parse_args(argv)


def test_defaults_and_resolution():
    cfg = make_config(epochs=10, distortion="tc").resolved()
    assert cfg.schedule.lr_milestones == [6, 8] and cfg.task.st_downsample is True
    assert make_config(distortion="r").resolved().task.st_downsample is False
    assert isinstance(cfg, RunConfig) and cfg.task.name == "distorted-digits"
    assert make_config(lr=1).optim.lr == 1.0 and isinstance(make_config(lr=1).optim.lr, float)


@pytest.mark.parametrize("options,message", [
    (dict(model="vgg"), r"model must be one of \['fcn', .*\], got 'vgg' \(config key 'task.model'\)"),
    (dict(epochs=0), r"epochs must be >= 1, got 0 \(config key 'train.epochs'\)"),
    (dict(distortion="rt"), "distortion must be one of"),
    (dict(lr=0.0), r"lr must be > 0, got 0.0 \(config key 'optim.lr'\)"),
    (dict(optimizer="lbfgs"), r"optimizer must be one of \['adam', 'adamw', 'sgd'\], got 'lbfgs'"),
    (dict(train_size=0), "train_size must be >= 1, got 0"),
    (dict(epochs=10, lr_milestones=[8, 6]), r"lr_milestones must be increasing epochs from 1 "
                                            r"to epochs - 1 = 9, got \[8, 6\]"),
    (dict(epochs=10, lr_milestones=[0]), "lr_milestones must be increasing"),
    (dict(epochs=10, lr_milestones=[10]), "lr_milestones must be increasing"),
])
def test_bad_values_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        make_config(**options).resolved()


def test_keys_that_do_not_exist_or_have_the_wrong_type():
    with pytest.raises(ValueError, match=r"config key 'optim.lrr' does not exist \(optim takes "
                                         r"optimizer, lr, momentum, weight_decay, loc_lr_mult\)"):
        config_from_dict({"optim": {"lrr": 0.1}})
    with pytest.raises(ValueError, match=r"config key 'optimiser' does not exist \(a config has "
                                         r"the tables task, train, optim, schedule\)"):
        config_from_dict({"optimiser": {}})
    with pytest.raises(ValueError, match=r"config key 'optim.lr' must be a finite number, got 'fast' "
                                         r"\(str\)"):
        config_from_dict({"optim": {"lr": "fast"}})
    with pytest.raises(ValueError, match=r"config key 'train.epochs' must be an int, got 2.5"):
        config_from_dict({"train": {"epochs": 2.5}})
    with pytest.raises(ValueError, match=r"config key 'train.epochs' must be an int, got True"):
        config_from_dict({"train": {"epochs": True}})
    with pytest.raises(ValueError, match=r"config key 'schedule.lr_milestones\[1\]' must be an "
                                         r"int, got 'x'"):
        config_from_dict({"schedule": {"lr_milestones": [1, "x"]}})
    with pytest.raises(ValueError, match=r"config key 'task.name' must be one of "
                                         + re.escape(str(TASKS.names())) + ", got 'chess'"):
        config_from_dict({"task": {"name": "chess"}})
    with pytest.raises(ValueError, match="option 'colour' does not exist for task"):
        make_config(colour="red")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"config key 'optim.lr' must be a finite number, "
                                             f"got {bad}"):
            config_from_dict({"optim": {"lr": bad}})
    with pytest.raises(ValueError, match=r"config key 'train' must be a table, got 5 \(int\)"):
        flat_overrides({"train": 5}, {"epochs": 2}, "distorted-digits")
    with pytest.raises(ValueError, match="seed must be <= 2147483647, got 20000000000"):
        make_config(seed=20_000_000_000).resolved()
    with pytest.raises(ValueError, match="is in the flat format of torchstn before the "
                                         "experiments package"):
        config_from_dict({"model": "cnn", "distortion": "r", "lr": 0.1})
    with pytest.raises(ValueError, match=r"config key 'optim.lr' must be a finite number, got "
                                         r"1000000000000000000000000000000"):
        config_from_dict({"optim": {"lr": 10 ** 400}})
    with pytest.raises(ValueError, match=r"lr_milestones must be empty with 1 epoch, got \[1\]"):
        make_config(epochs=1, lr_milestones=[1]).resolved()


def test_a_task_config_with_an_unsupported_field_type_is_refused_at_once():
    from dataclasses import dataclass

    @dataclass
    class Odd:
        name: str = "odd"
        size: tuple[int, int] = (2, 2)

    class OddTask:
        Config = Odd

    TASKS.add("odd", OddTask)
    try:
        with pytest.raises(TypeError, match=r"Odd.size has type tuple\[int, int\]: config "
                                            "fields may be int, float, str, bool"):
            make_config(task="odd")
    finally:
        TASKS._entries.pop("odd")


def test_round_trip_through_dict_and_toml(tmp_path):
    cfg = make_config(distortion="p", model="st-cnn-tps", epochs=3, lr=0.02, seed=5,
                      train_size=100).resolved()
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    (tmp_path / "c.toml").write_text(config_to_toml(cfg))
    assert config_from_dict(load_config_file(tmp_path / "c.toml")) == cfg


def test_every_field_has_a_flag_and_flags_parse_to_its_type():
    """The flags are generated from the dataclasses: none missing, each of the field's type."""
    index = config_fields("distorted-digits")
    sections = [TASKS.get("distorted-digits").Config, TrainConfig, OptimConfig, ScheduleConfig]
    assert len(index) == sum(len(fields(c)) for c in sections)
    args = _parse(["train", "--out", "x", "--epochs", "4", "--lr", "0.5", "--lr-milestones",
                   "1", "3", "--no-st-downsample", "--train-size", "9", "--device", "cpu",
                   "--task", "distorted-digits"])
    assert (args.epochs, args.lr, args.lr_milestones, args.st_downsample, args.train_size) == (
        4, 0.5, [1, 3], False, 9)
    assert not hasattr(_parse(["train", "--out", "x"]), "epochs")  # unset flags stay unset
    parser = argparse.ArgumentParser()
    add_config_flags(parser, "distorted-digits")
    flags = {a.dest: a for a in parser._actions if a.option_strings}
    assert set(flags) == set(index) | {"help"}
    for key, (_, f, hint) in index.items():
        assert flags[key].option_strings[0] == "--" + key.replace("_", "-")
        assert f.metadata["help"] in flags[key].help
        # every type is one the flag generator knows
        assert hint in (int, float, str, bool, int | None, bool | None, str | None,
                        list[int] | None), key
    assert _parse(["train", "--out", "x", "--train-distortion", "r15",
                   "--fixed-distortions"]).train_distortion == "r15"


def test_config_file_then_flags(data_dir, tmp_path, capsys):
    conf = tmp_path / "run.toml"
    conf.write_text('[task]\ndistortion = "r"\nmodel = "fcn"\ntrain_size = 128\n'
                    'test_size = 32\n[train]\nepochs = 2\nbatch_size = 64\n[optim]\nlr = 0.01\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--epochs", "1", "--out", str(out),
                 "--data-dir", str(data_dir), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 1  # the flag wins
    assert saved["optim"]["lr"] == 0.01 and saved["task"]["model"] == "fcn"  # the file holds
    assert saved["train"]["batch_size"] == 64 and saved["optim"]["optimizer"] == "adam"
    assert main(["config", "--config", str(conf), "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert 'model = "fcn"' in printed and "seed = 4" in printed


@pytest.mark.parametrize("text,message", [
    ("[optim\nlr = 1", "is not valid TOML"),
    ("[optim]\nlr = 'x'", r"config key 'optim.lr' must be a finite number, got 'x' \(str\)"),
    ("[optim]\nbeta = 1", "config key 'optim.beta' does not exist"),
    ("[task]\nname = 'chess'", r"config key 'task.name' of --config .*bad.toml must be one of "
                               + re.escape(str(TASKS.names())) + ", got 'chess'"),
])
def test_bad_config_files_are_clear_errors(tmp_path, capsys, text, message):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(out)]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing written


def test_config_files_that_cannot_be_read(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "cannot read it (Is a directory)" in capsys.readouterr().err
    (tmp_path / "latin1.toml").write_bytes(b"[optim]\nname = '\xff'\n")
    assert main(["config", "--config", str(tmp_path / "latin1.toml")]) == 2
    assert "latin1.toml is not valid TOML" in capsys.readouterr().err
    (tmp_path / "flat.toml").write_text('model = "cnn"\nlr = 0.1\n')  # the old flat form
    assert main(["train", "--config", str(tmp_path / "flat.toml"), "--out", "x"]) == 2
    assert "flat.toml is in the flat format of torchstn before" in capsys.readouterr().err


def test_unknown_task_and_missing_config(tmp_path, capsys):
    assert main(["train", "--task", "chess", "--out", str(tmp_path / "r")]) == 2
    assert (f"--task must be one of {TASKS.names()}, got 'chess'"
            in capsys.readouterr().err)
    assert main(["train", "--config", str(tmp_path / "nope.toml"), "--out", "x"]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err


def test_the_shipped_table1_configs_are_what_reproduce_runs():
    base = table1_base().resolved()
    files = sorted(CONFIGS.glob("*.toml"))
    assert len(files) == len(TABLE1_CELLS) == 36
    for distortion, model in TABLE1_CELLS:
        loaded = config_from_dict(load_config_file(CONFIGS / f"{distortion}-{model}.toml"))
        assert loaded.resolved() == table1_cell(base, distortion, model, 0), (distortion, model)
