"""Run configuration: one dataclass per component, the single source of truth.

A run is a :class:`RunConfig` of four sections: ``task`` (the task's own dataclass, with
the task's ``name``: data and model), ``train`` (:class:`TrainConfig`: epochs, batch,
seed, device), ``optim`` (:class:`OptimConfig`) and ``schedule``
(:class:`ScheduleConfig`). The same dataclasses give

- the command-line flags (:func:`add_config_flags`: a field ``batch_size`` is the flag
  ``--batch-size``; every field name is unique across the sections),
- the config file (:func:`load_config_file`, TOML: a table per section, e.g.
  ``[optim] lr = 0.001``), whose values flags override,
- the JSON saved beside every run and inside its checkpoint (:func:`config_to_dict`,
  :func:`config_from_dict`).

Every value read from a file is checked against its field's type, choices and range, and
an error names the key (``optim.lr``), what was expected and what arrived.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from .optim import OPTIMIZERS
from .options import SEED_MAX, option
from .schedules import SCHEDULES
from .tasks import DEFAULT_TASK, TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PRECISIONS", "SEED_MAX", "OptimConfig", "RunConfig", "ScheduleConfig", "TrainConfig",
           "add_config_flags", "check_not_legacy", "config_fields", "config_from_dict",
           "config_to_dict", "config_to_toml", "flat_overrides", "load_config_file",
           "make_config", "option"]

SECTIONS = ("task", "train", "optim", "schedule")
#: ``train.precision`` values; ``auto`` is resolved per machine when a run trains.
PRECISIONS = ("fp32", "bf16", "auto")
_SUPPORTED = "int, float, str, bool, list[int], list[float], list[str] (or X | None)"


def _optimizers() -> list[str]:
    return OPTIMIZERS.names()


def _schedules() -> list[str]:
    return SCHEDULES.names()


@dataclass
class TrainConfig:
    """How the engine trains, whatever the task."""

    epochs: int = option(10, "epochs to train", minimum=1)
    batch_size: int = option(256, "global batch size (split evenly over torchrun's ranks)",
                             minimum=1)
    seed: int = option(0, "seed of the model's initialisation and of the training data",
                       minimum=0, maximum=SEED_MAX)
    device: str = option("cpu", "cpu, cuda or cuda:N (under torchrun each rank takes "
                                "cuda:LOCAL_RANK)")
    precision: str = option("fp32", "fp32; bf16: bfloat16 autocast in training and "
                                    "scoring (the warps keep float32); auto: bf16 on CUDA "
                                    "and on CPUs with native bfloat16, fp32 elsewhere (each "
                                    "epoch records which)",
                            choices=lambda: list(PRECISIONS))
    channels_last: bool | None = option(None, "channels-last memory for the model's "
                                              "weights and activations (default: when "
                                              "training in bf16)")


@dataclass
class OptimConfig:
    """The optimizer. The paper's recipe is ``optimizer="sgd", lr=0.01, momentum=0``."""

    optimizer: str = option("adam", "optimizer", choices=_optimizers)
    lr: float = option(1e-3, "base learning rate (the schedule scales it)", above=0)
    momentum: float = option(0.9, "SGD momentum", minimum=0)
    weight_decay: float = option(0.0, "weight decay", minimum=0)
    loc_lr_mult: float = option(1.0, "learning-rate multiplier of every spatial transformer "
                                     "(localisation net and regression head)", minimum=0)


@dataclass
class ScheduleConfig:
    """The learning-rate schedule, set once per epoch."""

    schedule: str = option("step", "learning-rate schedule: step (divided by 10 at the "
                                   "milestones) or onecycle (linear warm-up, then cosine "
                                   "to 0; set every step)", choices=_schedules)
    warmup_epochs: float = option(1.0, "onecycle: epochs of linear warm-up from 1/25 of "
                                       "the rate", minimum=0)
    # Epochs after which the learning rate is divided by 10 (default: at 60% and 85%).
    lr_milestones: list[int] | None = option(
        None, "epochs after which the learning rate is divided by 10 (default: after 60%% "
              "and 85%% of the epochs)")


@dataclass
class RunConfig:
    """Everything that determines a run; saved beside every result and in the checkpoint."""

    task: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def sections(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SECTIONS}

    def resolved(self) -> RunConfig:
        """A copy with every default filled in, every value checked."""
        cfg = config_from_dict(config_to_dict(self))
        for name, section in cfg.sections().items():
            _check_values(name, section)
        epochs = cfg.train.epochs
        if cfg.train.channels_last is None and cfg.train.precision != "auto":
            # (under auto the engine decides with the precision it trains in)
            cfg.train.channels_last = cfg.train.precision == "bf16"
        if cfg.schedule.lr_milestones is None:
            cfg.schedule.lr_milestones = sorted(
                {max(1, round(0.6 * epochs)), max(1, round(0.85 * epochs))} - {epochs})
        milestones = cfg.schedule.lr_milestones
        if milestones != sorted(set(milestones)) or not all(0 < m < epochs for m in milestones):
            allowed = ("empty with 1 epoch" if epochs == 1 else
                       f"increasing epochs from 1 to epochs - 1 = {epochs - 1}")
            raise ValueError(f"lr_milestones must be {allowed}, got {milestones} (config key "
                             "'schedule.lr_milestones')")
        resolve = getattr(cfg.task, "resolve", None)
        if resolve is not None:
            resolve()
        return cfg


def _section_classes(task_name: object) -> dict[str, type]:
    """The dataclass of each section of a run of task ``task_name``, in ``SECTIONS`` order."""
    return {"task": _task_config_class(task_name), "train": TrainConfig,
            "optim": OptimConfig, "schedule": ScheduleConfig}


def _check_table(key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"config key {key!r} must be a table, got {value!r} "
                         f"({type(value).__name__})")


def _task_config_class(name: object) -> type:
    return TASKS.get(name).Config


def _hints(cls: type) -> dict[str, Any]:
    """The field types of a config dataclass, each one the flags and files can carry."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not _supported(hints[f.name]):
            raise TypeError(f"{cls.__name__}.{f.name} has type {hints[f.name]}: config "
                            f"fields may be {_SUPPORTED}")
    return hints


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is list:
        return "a list of " + {int: "ints", float: "numbers", str: "strings"}[args[0]]
    return {int: "an int", float: "a finite number", str: "a string",
            bool: "true or false"}[hint]


def _supported(hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and _supported(rest[0])
    if origin is list:
        return args[0] in (int, float, str)
    return hint in (int, float, str, bool)


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (ints accepted for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    ok, out = False, value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own message
            return _typed(key, value, options[0])
        for arg in options:
            try:
                return _typed(key, value, arg)
            except ValueError:
                continue
    elif origin is list:
        if isinstance(value, list):
            return [_typed(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        try:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                math.isfinite(float(value)))
        except OverflowError:  # an int too large for a float
            ok = False
        out = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"config key {key!r} must be {_describe(hint)}, got {value!r} "
                         f"({type(value).__name__})")
    return out


def _section_from_dict(cls: type, data: Any, where: str) -> Any:
    _check_table(where, data)
    hints = _hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"config key '{where}.{unknown[0]}' does not exist ({where} takes "
                         f"{', '.join(known)})")
    values = {k: _typed(f"{where}.{k}", v, hints[k]) for k, v in data.items()}
    return cls(**values)


def check_not_legacy(data: dict, where: str) -> None:
    """Refuse the flat configuration that runs written before the experiments package
    hold (``{"model": ..., "lr": ...}``): its runs cannot be loaded or resumed."""
    if "model" in data and "task" not in data:
        raise ValueError(f"{where} is in the flat format of torchstn before the experiments "
                         "package (a top-level 'model' key, no [task] table): that run cannot "
                         "be loaded or resumed; train it again into another --out")


def config_from_dict(data: Any, where: str = "config") -> RunConfig:
    """A :class:`RunConfig` from nested dicts (a TOML file, a saved ``config.json``).

    Missing keys take their defaults; unknown keys and wrongly typed values raise a
    ``ValueError`` naming the key. The task section must name its task.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table, got {type(data).__name__}")
    check_not_legacy(data, where)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config key {unknown[0]!r} does not exist (a config has the tables "
                         f"{', '.join(SECTIONS)})")
    task = data.get("task", {})
    _check_table("task", task)
    name = task.get("name", DEFAULT_TASK)
    TASKS.check(name, "config key 'task.name'")
    return RunConfig(**{key: _section_from_dict(cls, data.get(key, {}), key)
                        for key, cls in _section_classes(name).items()})


def config_to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dicts: a section per key, as saved in ``config.json``."""
    return {name: dataclasses.asdict(section) for name, section in cfg.sections().items()}


def _check_values(where: str, section: Any) -> None:
    for f in fields(section):
        value = getattr(section, f.name)
        if value is None:
            continue
        meta = f.metadata
        key = f"{where}.{f.name}"
        choices = meta.get("choices")
        if choices is not None and value not in (allowed := list(choices())):
            raise ValueError(f"{f.name} must be one of {allowed}, got {value!r} (config key "
                             f"'{key}')")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ValueError(f"{f.name} must be >= {meta['minimum']}, got {value!r} (config "
                             f"key '{key}')")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ValueError(f"{f.name} must be <= {meta['maximum']}, got {value!r} (config "
                             f"key '{key}')")
        if meta.get("above") is not None and value <= meta["above"]:
            raise ValueError(f"{f.name} must be > {meta['above']}, got {value!r} (config key "
                             f"'{key}')")


def config_to_toml(cfg: RunConfig) -> str:
    """``cfg`` as a TOML config file. ``None`` values, which mean "the default" (for
    derived defaults: follow the keys they derive from), are left out."""
    import tomli_w

    data = {name: {k: v for k, v in section.items() if v is not None}
            for name, section in config_to_dict(cfg).items()}
    return tomli_w.dumps(data)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The tables of a TOML config file (checked later by :func:`config_from_dict`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read it ({e.strerror})") from None


def config_fields(task_name: str) -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Option name -> (section, field, type) for every field of a task's run config
    (``task`` is ``task.name``)."""
    out: dict[str, tuple[str, dataclasses.Field, Any]] = {}
    for section, cls in _section_classes(task_name).items():
        hints = _hints(cls)
        for f in fields(cls):
            key = "task" if (section, f.name) == ("task", "name") else f.name
            if key in out:  # pragma: no cover - a programming error, caught by the tests
                raise AssertionError(f"field {key!r} appears in two config sections")
            out[key] = (section, f, hints[f.name])
    return out


def flat_overrides(data: dict[str, Any], overrides: dict[str, Any], task_name: str) -> dict:
    """``data`` (nested dicts) with flat ``{field: value}`` overrides put into their sections.

    ``task`` sets ``task.name``; every other key is a field name of one section.
    """
    index = config_fields(task_name)
    for key, value in data.items():
        if key in SECTIONS:
            _check_table(key, value)
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in overrides.items():
        if key not in index:
            raise ValueError(f"option {key!r} does not exist for task {task_name!r} (options: "
                             f"{', '.join(sorted(index))})")
        section, f, _ = index[key]
        out.setdefault(section, {})[f.name] = value
    out.setdefault("task", {})["name"] = task_name
    return out


def make_config(task: str | None = None, **options: Any) -> RunConfig:
    """A run config from flat options, the names of the command-line flags.

    Example:
        >>> cfg = make_config(distortion="rts", model="st-cnn-affine", epochs=2, lr=0.01)
        >>> cfg.task.distortion, cfg.train.epochs, cfg.optim.lr
        ('rts', 2, 0.01)
    """
    return config_from_dict(flat_overrides({}, options, task or DEFAULT_TASK))


def add_config_flags(parser: argparse.ArgumentParser, task_name: str, *,
                     exclude: set[str] = frozenset()) -> None:
    """A flag per config field (``--batch-size`` for ``batch_size``); unset flags stay
    out of the parsed namespace, so a config file's values and the defaults hold."""
    groups: dict[str, Any] = {}
    for key, (section, f, hint) in config_fields(task_name).items():
        if key in exclude:
            continue
        if section not in groups:
            title = f"[{section}] ({task_name})" if section == "task" else f"[{section}]"
            groups[section] = parser.add_argument_group(title)
        flag = "--" + key.replace("_", "-")
        text = f.metadata.get("help", "")
        if f.default is not None and f.default is not dataclasses.MISSING:
            text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": key, "help": text}
        base = hint
        if typing.get_origin(hint) in (Union, types.UnionType):
            base = next(a for a in typing.get_args(hint) if a is not type(None))
        if key == "task":
                    kwargs.update(choices=TASKS.names(), metavar="NAME")
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs.update(nargs="*", type=typing.get_args(base)[0])
        else:
            kwargs["type"] = base
            if f.metadata.get("choices") is not None:
                kwargs["choices"] = list(f.metadata["choices"]())
        groups[section].add_argument(flag, **kwargs)
