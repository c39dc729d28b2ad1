"""How far the transformers of house-number runs moved from the identity.

For each run folder, per transformer, over 500 test numbers (centre windows): the mean
area of the input region it reads (1: the whole input; composed back through the
transformers before it) and the mean of the largest |theta - identity| entry.
Usage: ``python scripts/house_transformers.py RUN [RUN ...]``.
"""

from __future__ import annotations

import sys

import torch

from torchstn.experiments.data.house_numbers import centre_crop
from torchstn.experiments.engine.loop import load_run
from torchstn.experiments.plots.figures import capture_transformers, composed_maps


def describe(run: str, n: int = 500) -> str:
    _, task, model, _ = load_run(run)
    x = centre_crop(task.data.test_set()[0][:n], task.crop).float() / 255
    with torch.no_grad():
        records = capture_transformers(model, x)
    rows = []
    for i, (rec, m) in enumerate(zip(records, composed_maps(records))):
        theta = rec["module"].parameters_of(rec["input"]).double().reshape(-1, 2, 3)
        moved = (theta - torch.eye(2, 3, dtype=torch.float64)).abs().amax((1, 2)).mean()
        area = m[:, :2, :2].det().abs().mean()
        rows.append(f"ST{i + 1}: region area {area:.3f}, max |theta - identity| {moved:.3f}")
    return f"{run}: " + ("; ".join(rows) or "no transformers")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(describe(path), flush=True)
