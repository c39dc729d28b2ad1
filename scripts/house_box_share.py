"""How much of a house-number canvas the number covers: room for a transformer to zoom.

Usage: python scripts/house_box_share.py [--numbers 10000] [--seed 2015]

For the tight (64 px) and loose (128 px) synthetic numbers, the mean share of the canvas
and of the central crop the models see at test time (54 of 64, 108 of 128) that the
number's ink box covers (``draw_numbers()["box"]``: the axis-aligned bounds of the
distorted box of its digits' ink), over numbers drawn with one seed (the distribution of
the training and test numbers alike).
"""

from __future__ import annotations

import argparse

import torch

from torchstn.experiments.data.house_numbers import CANVAS, box_share, draw_numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=2015)
    args = parser.parse_args()
    print(f"mean share covered by the number's ink box, {args.numbers:,} numbers "
          f"(seed {args.seed})\n")
    print("| variant | canvas | of the canvas | of the central crop (crop) | median of the "
          "crop |")
    print("|---|---|---|---|---|")
    for variant, size in CANVAS.items():
        gen = torch.Generator().manual_seed(args.seed)
        box = draw_numbers(args.numbers, gen, 10000, variant)["box"]
        crop = size * 54 // 64
        canvas, window = box_share(box, size), box_share(box, size, crop)
        print(f"| {variant} | {size} | {100 * canvas.mean():.1f}% | "
              f"{100 * window.mean():.1f}% ({crop}) | {100 * window.median():.1f}% |")


if __name__ == "__main__":
    main()
