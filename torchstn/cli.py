"""The ``torchstn`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

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
    demo = sub.add_parser(
        "demo", help="warp a real MNIST digit with each transform family and save a figure"
    )
    demo.add_argument("--data-dir", default=None,
                      help="folder holding mnist/t10k-*-ubyte[.gz] (default: $TORCHSTN_DATA, "
                           "else ~/.cache/torchstn)")
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
    except (FileNotFoundError, ValueError) as e:
        print(f"torchstn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
