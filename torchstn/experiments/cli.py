"""The ``torchstn`` command line: train, eval, show, reproduce, config, tasks, models,
transforms, demo.

The flags of ``train`` and ``reproduce`` are generated from the run configuration's
dataclasses (:mod:`torchstn.experiments.config`) for the task ``--task`` names (default:
``distorted-digits``): ``--config FILE.toml`` reads a config file, and flags override it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

_DATA_HELP = ("data root holding <dataset>/... (default: $TORCHSTN_DATA, else "
              "~/.cache/torchstn)")
def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help=_DATA_HELP)
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files from the public mirrors (verified)")


def _add_run_args(p: argparse.ArgumentParser, task: str, *, exclude=frozenset()) -> None:
    from .config import add_config_flags

    p.add_argument("--config", metavar="FILE.toml",
                   help="read the run configuration from a TOML file; flags override it")
    add_config_flags(p, task, exclude=set(exclude))


def _config(args: argparse.Namespace, task: str, defaults: dict | None = None):
    """The run configuration: defaults < ``defaults`` (flat) < --config file < flags."""
    from .config import (
        check_not_legacy,
        config_fields,
        config_from_dict,
        flat_overrides,
        load_config_file,
    )

    path = getattr(args, "config", None)
    data = load_config_file(path) if path else {}
    where = f"--config {path}" if path else "config"
    check_not_legacy(data, where)
    if defaults:
        below = flat_overrides({}, defaults, task)
        for section, values in data.items():
            below[section] = {**below.get(section, {}), **values} if isinstance(
                values, dict) else values
        data = below
    given = {k: getattr(args, k) for k in config_fields(task) if hasattr(args, k)}
    given.pop("task", None)
    return config_from_dict(flat_overrides(data, given, task), where)


def _prepare_data(args: argparse.Namespace, cfg) -> None:
    if args.download:
        from .tasks import TASKS

        TASKS.get(cfg.task.name).download(cfg.task, args.data_dir)


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _saved_config(out) -> dict | None:
    """The configuration saved in run folder ``out``'s checkpoint (None: no checkpoint)."""
    from .engine import CHECKPOINT, read_checkpoint_meta

    ckpt = Path(out) / CHECKPOINT
    return read_checkpoint_meta(ckpt)["config"] if ckpt.is_file() else None


def _train(args: argparse.Namespace) -> int:
    from .engine import train

    _threads(args)
    saved = _saved_config(args.out) if args.resume and not args.config else None
    if saved is not None:
        # --resume with the run's folder alone continues it: its saved configuration is
        # the default, and flags given beside it still override (a different recipe is
        # then refused by the engine, naming what differs).
        # Where the run trains is not part of it (a GPU run resumes on the CPU), and a
        # run of another task than --task names is refused by the engine, naming both.
        same_task = isinstance(saved.get("task"), dict) and \
            saved["task"].get("name") == args.task_name
        flat = {k: v for name, section in saved.items() if isinstance(section, dict)
                for k, v in section.items()
                if not (name == "task" and k == "name") and (name, k) != ("train", "device")}
        cfg = _config(args, args.task_name, flat if same_task else None).resolved()
    else:
        cfg = _config(args, args.task_name).resolved()
    _prepare_data(args, cfg)
    metrics = train(cfg, args.out, data_dir=args.data_dir, resume=args.resume,
                    progress=not args.no_progress, stop_after=args.stop_after)
    if "task" in metrics:  # rank 0 (the only rank that writes) reports
        split = "val" if any(k.startswith("val_") for k in metrics) else "test"
        shown = ", ".join(f"{k.removeprefix(split + '_')} {metrics[k]:.4g}" for k in metrics
                          if k.startswith(split + "_"))
        done = metrics["epochs_done"]
        print(f"{cfg.task.name}: {split} {shown} after {done} epoch{'s' * (done != 1)} "
              f"({metrics['parameters']:,} parameters, {metrics['train_seconds']:.0f} s); "
              f"wrote {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .engine import evaluate, load_run, resolve_precision

    cfg, task, model, meta = load_run(args.run, data_dir=args.data_dir, device=args.device)
    _prepare_data(args, cfg)
    stored = meta["history"][-1]
    precision = args.precision
    if precision == "trained":
        # Runs before 0.2 record no precision per epoch: their config's is the one.
        precision = stored.get("precision", cfg.train.precision)
    precision = resolve_precision(precision, task.device)
    metrics = evaluate(task, model, precision=precision)
    shown = ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in metrics.items())
    before = ", ".join(f"{stored[k]:.4f}" for k in metrics if k in stored)
    trained = stored.get("precision", cfg.train.precision)
    print(f"{task.describe()} (epoch {meta['epoch']}, scored in {precision}; trained in "
          f"{trained}): test {shown} (recorded at training time: {before})")
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from torchstn.export import export_onnx

    from .engine import load_run

    cfg, task, model, meta = load_run(args.run, data_dir=args.data_dir)
    _prepare_data(args, cfg)
    example = task.example_inputs(2)
    path = export_onnx(model, example, args.onnx, opset_version=args.opset)
    line = f"wrote {path} (ONNX opset {args.opset}, any batch size)"
    try:
        import onnxruntime
    except ImportError:
        print(line + "; onnxruntime is not installed, so it was not checked")
        return 0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = task.example_inputs(5)  # another batch size than the one exported
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), check)}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = model(*check).numpy()
    err = float(abs(got - want).max())
    if not err <= 1e-4:
        _say("export", f"{path}: onnxruntime differs from PyTorch by {err:.1e} on 5 test "
                       "inputs (more than 1e-4): the file is not to be trusted")
        return 1
    print(f"{line}; onnxruntime matches PyTorch to {err:.1e} on 5 test inputs (float32)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .engine import load_run

    cfg, task, model, meta = load_run(args.run, data_dir=args.data_dir)
    paths = task.figures(args.run, model, meta["history"])
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .engine import is_primary_process
    from .reports.experiments import EXPERIMENT_TABLE

    _threads(args)
    exp = EXPERIMENT_TABLE[args.experiment]
    base = _config(args, exp.task, exp.recipe()).resolved()
    _prepare_data(args, base)
    chosen = {sel.name: getattr(args, sel.name) for sel in exp.selections}
    table = exp.runner(args.out, seeds=args.seeds, base=base, data_dir=args.data_dir,
                       progress=not args.no_progress, **chosen)
    if is_primary_process():
        print(table)
        print(f"wrote {args.out}/{args.experiment}.md")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from .config import config_to_toml

    cfg = _config(args, args.task_name)
    cfg.resolved()  # checked, but printed as given: derived defaults keep following
    print(config_to_toml(cfg), end="")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .tasks import DEFAULT_TASK, TASKS

    for name, cls in TASKS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {doc}{' (default)' if name == DEFAULT_TASK else ''}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .data.distortions import DISTORTIONS
    from .engine import count_parameters
    from .models import build_model, list_models

    sizes = {spec.size: name in ("rts", "tc") for name, spec in DISTORTIONS.items()}
    print(f"{'model':<18}" + "".join(f"{f'{s}x{s}':>10}" for s in sizes))
    for name in list_models():
        counts = [count_parameters(build_model(name, s, st_downsample=ds))
                  for s, ds in sizes.items()]
        print(f"{name:<18}" + "".join(f"{c:>10,}" for c in counts))
    print("(parameters; 42x42 and 60x60 transformers downsample their output by 2)")
    from .models import ADDITION_MODELS, MNIST3D_MODELS, build_addition_model

    print("\nmnist-addition (2x42x42):")
    for name in ADDITION_MODELS.names():
        print(f"{name:<20}{count_parameters(build_addition_model(name)):>10,}")
    print("\nmnist3d (1x60x60x60):")
    for name in MNIST3D_MODELS.names():
        print(f"{name:<20}{count_parameters(MNIST3D_MODELS.get(name)(60)):>10,}")
    from .models import HOUSE_MODELS, build_house_model

    print("\nhouse numbers (3x54x54 SVHN crops; 1x54x54 synthetic at width 0.25):")
    for name in HOUSE_MODELS.names():
        full = count_parameters(build_house_model(name, 54))
        small = count_parameters(build_house_model(name, 54, in_channels=1, width=0.25))
        print(f"{name:<20}{full:>12,}{small:>12,}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .reports.demo import run_demo

    if args.download:
        from .data.idx import download

        download("mnist", args.data_dir)
    outputs = run_demo(args.out, data_dir=args.data_dir, index=args.index,
                       out_size=args.out_size)
    print(f"warped MNIST test image #{args.index} with {len(outputs)} families: "
          f"{', '.join(outputs)}")
    print(f"wrote {args.out}")
    return 0


def _transforms(args: argparse.Namespace) -> int:
    from torchstn.transforms import get_transform, list_transforms

    print(f"{'family':<12} {'params':>6}  {'dims':>4}  matrix")
    for name in list_transforms():
        tf = get_transform(name)
        print(f"{name:<12} {tf.num_params:>6}  {tf.ndim:>4}  {'yes' if tf.is_matrix else 'no'}")
    return 0


def build_parser(task: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the config flags of ``task`` (default: the default task)."""
    from .tasks import DEFAULT_TASK

    task = task or DEFAULT_TASK
    parser = argparse.ArgumentParser(
        prog="torchstn",
        description="Spatial Transformer Networks for PyTorch (Jaderberg et al., 2015).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model on a task (default: distorted MNIST)")
    _add_run_args(train, task)
    train.add_argument("--out", required=True, help="run folder (metrics, checkpoint, figures)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--stop-after", type=int, metavar="EPOCHS",
                       help="train at most this many epochs now (to fit a time slot); "
                            "--resume continues")
    train.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_args(train)
    train.set_defaults(func=_train, task_name=task)

    for name, func, text in [("eval", _eval, "recompute the test metrics of a run"),
                             ("show", _show, "write the figures of a run again")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run folder written by torchstn train")
        if name == "eval":
            p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
            p.add_argument("--precision", default="trained",
                           choices=["trained", "fp32", "bf16", "auto"],
                           help="precision to score in (default: the one the run's last "
                                "epoch trained in; auto: bf16 where native)")
        _add_data_args(p)
        p.set_defaults(func=func)

    from torchstn.export import OPSET

    exp = sub.add_parser("export", help="write a trained run's model as an ONNX file")
    exp.add_argument("run", help="run folder written by torchstn train")
    exp.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    exp.add_argument("--opset", type=int, default=OPSET,
                     help=f"ONNX opset (default: {OPSET})")
    _add_data_args(exp)
    exp.set_defaults(func=_export)

    rep = sub.add_parser("reproduce", help="reproduce an experiment of the paper: a grid of "
                                           "runs at the chosen recipe, beside the paper")
    experiments = rep.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    from .reports.experiments import EXPERIMENT_TABLE

    for name, exp in EXPERIMENT_TABLE.items():
        parser_ = experiments.add_parser(name, help=exp.help, description=exp.help)
        for sel in exp.selections:
            parser_.add_argument(f"--{sel.name}", nargs="+", type=sel.type, default=None,
                                 help=sel.help)
        parser_.add_argument("--seeds", type=int, default=1,
                             help="seeds per cell (default: 1)")
        parser_.add_argument("--out", default=f"runs/{name}", help=f"default: runs/{name}")
        parser_.add_argument("--threads", type=int)
        parser_.add_argument("--no-progress", action="store_true")
        _add_run_args(parser_, exp.task, exclude=exp.cell_fields)
        _add_data_args(parser_)
        parser_.set_defaults(func=_reproduce)

    cfg = sub.add_parser("config", help="print the run configuration as TOML (a starting "
                                        "point for --config; defaults derived from other "
                                        "keys are left out, so they keep following them)")
    _add_run_args(cfg, task)
    cfg.set_defaults(func=_show_config, task_name=task)

    tasks = sub.add_parser("tasks", help="list the tasks")
    tasks.set_defaults(func=_tasks)

    models = sub.add_parser("models", help="list the models and their parameter counts")
    models.set_defaults(func=_models)

    demo = sub.add_parser(
        "demo", help="warp a real MNIST digit with each transform family and save a figure"
    )
    _add_data_args(demo)
    demo.add_argument("--out", default="demo.png", help="figure path (default: demo.png)")
    demo.add_argument("--index", type=int, default=0, help="test-set digit (default: 0)")
    demo.add_argument("--out-size", type=int, default=40,
                      help="side of the warped outputs in pixels (default: 40)")
    demo.set_defaults(func=_demo)

    tfs = sub.add_parser("transforms", help="list the transform families")
    tfs.set_defaults(func=_transforms)
    return parser


def _task_of(argv: list[str]) -> tuple[str | None, str]:
    """The task a command line names, and where: ``--task``, else its ``--config`` file's."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.task is not None:
        return known.task, "--task"
    if known.config is not None:
        from .config import load_config_file

        task = load_config_file(known.config).get("task", {})
        if isinstance(task, dict) and "name" in task:
            return task["name"], f"config key 'task.name' of --config {known.config}"
    return None, "--task"


def _resumed_task(argv: list[str]) -> tuple[str | None, str]:
    """The task of the run that ``train --out RUN --resume`` continues, if it names none."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--out")
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if not (known.resume and known.out):
        return None, "--task"
    saved = _saved_config(known.out)
    task = saved.get("task") if saved is not None else None
    if isinstance(task, dict) and "name" in task:
        return task["name"], f"the saved configuration of {known.out}"
    return None, "--task"


def _say(command: str | None, message: str) -> None:
    """Print an error once: under torchrun every rank meets it, rank 0 reports it."""
    from .engine.distributed import is_primary_process

    if is_primary_process():
        print(f"torchstn {command}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        from .tasks import TASKS

        task = None
        if command in ("train", "config"):
            task, where = _task_of(argv[1:])
            if task is None and command == "train":
                task, where = _resumed_task(argv[1:])
            if task is not None:
                TASKS.check(task, where)
        parser = build_parser(task)
    except (FileNotFoundError, ValueError) as e:
        _say(command, str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError, FloatingPointError) as e:
        _say(args.command, str(e))
        return 2
    except (ImportError, NotImplementedError) as e:  # an extra not installed; no export
        _say(args.command, str(e))
        return 1
    except KeyboardInterrupt:
        saved = args.command == "train" and (Path(args.out) / "checkpoint.safetensors").exists()
        resume = " (the last finished epoch is saved: --resume continues)" if saved else ""
        _say(args.command, f"interrupted{resume}")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
