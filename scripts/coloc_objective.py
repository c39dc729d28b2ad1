"""The co-localisation loss at fixed crops: does the objective prefer the true boxes?

Evaluates the triplet hinge (margin 1) of `--task colocalization` on 100 canvases of one
digit for three sets of crops (the true 28x28 boxes, a 28x28 box in the top-left corner
of every canvas, and a 4x4 box at each digit's centre) and for several encodings of the
frozen encoder: its pooled convolution maps (what the task uses), its logits, its class
probabilities, and concatenations, each part scaled to unit length. Prints the mean loss,
the mean squared distance between crops of different images (close) and between a crop
and a random patch of its image (far).

    python scripts/coloc_objective.py --digit 3 --encoder runs/coloc-encoder
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.experiments.tasks.colocalization import CoLocalization, CoLocalizationConfig
from torchstn.warping import warp

MODES = ("maps", "logits", "prob", "maps+logits")


def encode(encoder: nn.Module, crops: torch.Tensor, mode: str) -> torch.Tensor:
    parts, h = [], crops
    for layer in encoder:
        h = layer(h)
        if isinstance(layer, nn.MaxPool2d) and "maps" in mode:
            parts.append(F.normalize(h.flatten(1), dim=1))
    if "logits" in mode:
        parts.append(F.normalize(h, dim=1))
    if "prob" in mode:
        parts.append(F.softmax(h, 1))
    return torch.cat(parts, 1) / math.sqrt(len(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digit", type=int, default=3)
    ap.add_argument("--clutter", action="store_true")
    ap.add_argument("--encoder", default="runs/coloc-encoder")
    ap.add_argument("--data-dir", default="../shared/datasets")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = CoLocalizationConfig(digit=args.digit, clutter=args.clutter, encoder=args.encoder)
    task = CoLocalization(cfg, data_dir=args.data_dir)
    model = task.build_model()
    task.init_model(model)
    model.eval()
    x = task._x(torch.arange(cfg.images))
    b = task.boxes
    side = (b[:, 2] - b[:, 0]) / 84
    centre = (b[:, :2] + b[:, 2:]) / 84 - 1
    true = torch.cat([side.log()[:, None], centre], 1).float()
    corner = true.clone()
    corner[:, 1:] = -(1 - corner[:, :1].exp())
    tiny = true.clone()
    tiny[:, 0] = math.log(4 / 84)
    print("| encoding | crops | loss | close | far |\n|---|---|---|---|---|")
    for mode in MODES:
        for name, p in (("true boxes", true), ("a corner", corner), ("4x4 on the digit", tiny)):
            torch.manual_seed(1)
            with torch.no_grad():
                e = encode(model.encoder, warp(x, p, "attention", out_size=(28, 28)), mode)
                t = (torch.rand(len(x), 2) * 2 - 1) * (1 - p[:, :1].exp())
                rand = warp(x, torch.cat([p[:, :1], t], 1), "attention", out_size=(28, 28))
                er = encode(model.encoder, rand, mode)
                close = torch.cdist(e, e).pow(2)
                off = ~torch.eye(len(x), dtype=torch.bool)
                far = (e - er).pow(2).sum(1)
                loss = F.relu(close - far[:, None] + cfg.margin)[off].mean()
            print(f"| {mode} | {name} | {loss:.3f} | {close[off].mean():.3f} | "
                  f"{far.mean():.3f} |")


if __name__ == "__main__":
    main()
