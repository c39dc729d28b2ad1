"""How much of each digit a distortion keeps, and where a trained model's errors fall.

The ink ratio of an image is its sum of pixel values after the distortion over the sum
before (1: all the ink kept; a scale s alone gives about s^2). Prints the distribution of
the ratio for a distortion and, given a finished Table 1 run on it, the test error of
that run's model in bins of the ratio (on a fresh seeded draw of the test digits).

    python scripts/ink_loss.py p --run results/table1/p/cnn/seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from torchstn.experiments.checkpoint import load_checkpoint
from torchstn.experiments.data.distortions import DISTORTIONS, distort, output_size
from torchstn.experiments.data.idx import load_idx_dataset
from torchstn.experiments.models import build_model

BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, float("inf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("distortion", choices=DISTORTIONS.names())
    ap.add_argument("--run", type=Path, help="a finished run on this distortion")
    ap.add_argument("--n", type=int, default=5000, help="test digits (default 5000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", default="../shared/datasets")
    args = ap.parse_args()

    x, y = load_idx_dataset("mnist", "test", args.data_dir)
    x, y = x[: args.n], y[: args.n]
    out, _ = distort(x, args.distortion, torch.Generator().manual_seed(args.seed))
    out = (out * 255).round() / 255  # as the test set is stored
    ink = out.sum((1, 2, 3)) / (x.double() / 255).sum((1, 2)).float()
    q = torch.tensor([0.01, 0.05, 0.5, 0.95])
    print(f"{args.distortion}: ink ratio quantiles 1/5/50/95%: "
          + " ".join(f"{v:.3f}" for v in torch.quantile(ink, q).tolist()))
    wrong = None
    if args.run is not None:
        cfg = json.loads((args.run / "config.json").read_text())["task"]
        if cfg["distortion"] != args.distortion:
            raise SystemExit(f"--run {args.run} is on {cfg['distortion']}, "
                             f"not {args.distortion}")
        model = build_model(cfg["model"], output_size(args.distortion),
                            st_downsample=bool(cfg.get("st_downsample")),
                            st_pool=bool(cfg.get("st_pool")))
        load_checkpoint(args.run / "checkpoint.safetensors", model)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(out[i : i + 500]).argmax(1)
                              for i in range(0, len(out), 500)])
        wrong = pred != y
        print(f"{cfg['model']}: error {100 * wrong.float().mean():.2f}% on these {len(y)}")
    print("| ink ratio | images | % of images |" + (" error % | % of errors |" if
                                                     wrong is not None else ""))
    print("|---|---|---|" + ("---|---|" if wrong is not None else ""))
    for lo, hi in zip(BINS, BINS[1:]):
        sel = (ink >= lo) & (ink < hi)
        row = f"| {lo:.1f}-{hi:.1f} | {int(sel.sum())} | {100 * sel.float().mean():.1f} |"
        if wrong is not None:
            err = 100 * wrong[sel].float().mean() if sel.any() else float("nan")
            share = 100 * (wrong & sel).sum() / max(int(wrong.sum()), 1)
            row += f" {err:.1f} | {share:.1f} |"
        print(row)


if __name__ == "__main__":
    main()
