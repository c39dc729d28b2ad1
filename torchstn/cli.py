"""The ``torchstn`` command line: train, eval, show, reproduce, models, demo, transforms."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

__all__ = ["main"]

_DATA_HELP = ("data root holding <dataset>/*-ubyte[.gz] (default: $TORCHSTN_DATA, else "
              "~/.cache/torchstn)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help=_DATA_HELP)
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files from the public mirrors (verified)")


def _add_config_args(p: argparse.ArgumentParser, *, full: bool = True) -> None:
    """Flags for TrainConfig fields; unset flags keep the dataclass defaults."""
    from .data.distortions import DISTORTIONS
    from .data.idx import DATASETS
    from .models import list_models

    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-size", type=int, help="first N training digits (default: all)")
    p.add_argument("--test-size", type=int, help="first N test digits (default: all)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--lr-milestones", type=int, nargs="*",
                   help="epochs after which the learning rate is divided by 10")
    p.add_argument("--loc-lr-mult", type=float,
                   help="learning-rate multiplier of the localisation net")
    p.add_argument("--test-seed", type=int)
    if full:
        p.add_argument("--distortion", choices=DISTORTIONS)
        p.add_argument("--model", choices=list_models())
        p.add_argument("--seed", type=int)
        p.add_argument("--st-downsample", action=argparse.BooleanOptionalAction)


def _config(args: argparse.Namespace):
    from .training import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    return TrainConfig(**given)


def _prepare_data(args: argparse.Namespace, dataset: str) -> None:
    if args.download:
        from .data.idx import download

        download(dataset, args.data_dir)


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _train(args: argparse.Namespace) -> int:
    from .training import train

    _threads(args)
    cfg = _config(args).resolved()
    _prepare_data(args, cfg.dataset)
    metrics = train(cfg, args.out, data_dir=args.data_dir, resume=args.resume,
                    progress=not args.no_progress)
    print(f"{cfg.model} on {cfg.dataset} {cfg.distortion}: test error "
          f"{metrics['test_error']:.2f}% after {metrics['epochs_done']} epochs "
          f"({metrics['parameters']} parameters, {metrics['train_seconds']:.0f} s); wrote "
          f"{args.out}/metrics.json, checkpoint.safetensors, transformer.png, curves.png")
    return 0


def _load(args: argparse.Namespace):
    from .data.mnist import DistortedMNIST
    from .training import load_run

    cfg, model, meta = load_run(args.run)
    _prepare_data(args, cfg.dataset)
    data = DistortedMNIST(cfg.dataset, cfg.distortion, data_dir=args.data_dir,
                          train_size=cfg.train_size, test_size=cfg.test_size, seed=cfg.seed,
                          test_seed=cfg.test_seed)
    return cfg, model, meta, data


def _eval(args: argparse.Namespace) -> int:
    from .training import evaluate

    cfg, model, meta, data = _load(args)
    loss, error = evaluate(model, *data.test_set())
    stored = meta["history"][-1]["test_error"]
    print(f"{cfg.model} on {cfg.dataset} {cfg.distortion} (epoch {meta['epoch']}): test error "
          f"{error:.2f}% (loss {loss:.4f}; recorded at training time: {stored:.2f}%)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .figures import save_run_figures

    cfg, model, meta, data = _load(args)
    paths = save_run_figures(args.run, model, data.test_set()[0], meta["history"], cfg)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run_table1

    _threads(args)
    base = _config(args)
    _prepare_data(args, base.dataset)
    table = run_table1(args.out, distortions=args.distortions, models=args.models,
                       seeds=args.seeds, base=base.resolved(), data_dir=args.data_dir,
                       progress=not args.no_progress)
    print(table)
    print(f"wrote {args.out}/table1.md")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .data.distortions import DISTORTIONS, output_size
    from .models import build_model, count_parameters, list_models

    sizes = {output_size(d): d in ("rts", "tc") for d in DISTORTIONS}
    print(f"{'model':<18}" + "".join(f"{f'{s}x{s}':>10}" for s in sizes))
    for name in list_models():
        counts = [count_parameters(build_model(name, s, st_downsample=ds))
                  for s, ds in sizes.items()]
        print(f"{name:<18}" + "".join(f"{c:>10,}" for c in counts))
    print("(parameters; 42x42 and 60x60 transformers downsample their output by 2)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _prepare_data(args, "mnist")
    outputs = run_demo(args.out, data_dir=args.data_dir, index=args.index,
                       out_size=args.out_size)
    print(f"warped MNIST test digit {args.index} with {len(outputs)} families: "
          f"{', '.join(outputs)}")
    print(f"wrote {args.out}")
    return 0


def _transforms(args: argparse.Namespace) -> int:
    from .transforms import get_transform, list_transforms

    print(f"{'family':<12} {'params':>6}  {'dims':>4}  matrix")
    for name in list_transforms():
        tf = get_transform(name)
        print(f"{name:<12} {tf.num_params:>6}  {tf.ndim:>4}  {'yes' if tf.is_matrix else 'no'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchstn",
        description="Spatial Transformer Networks for PyTorch (Jaderberg et al., 2015).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model on distorted MNIST")
    _add_config_args(train)
    train.add_argument("--out", required=True, help="run folder (metrics, checkpoint, figures)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_args(train)
    train.set_defaults(func=_train)

    for name, func, text in [("eval", _eval, "recompute the test error of a run"),
                             ("show", _show, "write the figures of a run again")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run folder written by torchstn train")
        _add_data_args(p)
        p.set_defaults(func=func)

    rep = sub.add_parser("reproduce", help="reproduce a table of the paper")
    rep.add_argument("table", choices=["table1"])
    rep.add_argument("--distortions", nargs="+", default=None,
                     help="among r rts p e tc (default: r rts p e)")
    rep.add_argument("--models", nargs="+", default=None, help="default: the 8 Table 1 rows")
    rep.add_argument("--seeds", type=int, default=1, help="seeds per cell (default: 1)")
    rep.add_argument("--out", default="runs/table1", help="default: runs/table1")
    rep.add_argument("--threads", type=int)
    rep.add_argument("--no-progress", action="store_true")
    _add_config_args(rep, full=False)
    _add_data_args(rep)
    rep.set_defaults(func=_reproduce)

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"torchstn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
