"""How far the transformers of house-number runs moved from the identity.

For each run folder: per transformer, over 500 test numbers (centre windows), the mean
area of the input region it reads (1 = the whole input; composed back through the
transformers before it) and the mean distance of its sampling grid from the identity's
(in half-widths of the input). Usage: ``python scripts/house_transformers.py RUN ...``.
"""

from __future__ import annotations

import sys

import torch

from torchstn.experiments.data.house_numbers import centre_crop
from torchstn.experiments.engine.loop import load_run
from torchstn.experiments.reports.figures import capture_transformers


def describe(run: str, n: int = 500) -> str:
    cfg, task, model, _ = load_run(run)
    x = centre_crop(task.data.test_set()[0][:n], task.crop).float() / 255
    with torch.no_grad():
        records = capture_transformers(model, x)
        rows, composed = [], None
        for i, rec in enumerate(records):
            theta = rec["module"].parameters_of(rec["input"]).double().reshape(-1, 2, 3)
            m = torch.zeros(len(theta), 3, 3, dtype=torch.float64)
            m[:, :2], m[:, 2, 2] = theta, 1
            composed = m if composed is None else composed @ m
            area = composed[:, :2, :2].det().abs().mean().item()
            ident = torch.eye(2, 3, dtype=torch.float64)
            shift = (theta - ident).abs().amax((1, 2)).mean().item()
            rows.append(f"ST{i + 1}: region area {area:.3f}, max |theta - identity| "
                        f"{shift:.3f}")
    return f"{run}: " + ("; ".join(rows) or "no transformers")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(describe(path), flush=True)
