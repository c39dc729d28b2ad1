"""Per-cell gap of our Table 1 to the paper's, with what the training curves say about it.

    python scripts/table1_gaps.py [--results results/table1]

For every cell the paper reports and we have finished runs of: our mean test error over
the finished seeds, the paper's, the difference, the last epoch's training error (the
running error of the epoch in training mode, on freshly distorted digits) and the test
error five epochs before the end, so a cell that is still improving or one that fits its
training digits no better than its test digits shows as such. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from torchstn.experiments.reports.reproduce import PAPER_TABLE1, TABLE1_CELLS, TABLE1_DISTORTIONS


def _runs(folder: Path) -> list[dict]:
    """The finished runs (every epoch of their configuration) of one cell."""
    runs = []
    for metrics in sorted(folder.glob("seed*/metrics.json")):
        data = json.loads(metrics.read_text())
        epochs = json.loads((metrics.parent / "config.json").read_text())["train"]["epochs"]
        if data["epochs_done"] >= epochs and len(data["history"]) >= 6:
            runs.append(data)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/table1"))
    args = parser.parse_args()
    print("| cell | seeds | ours | paper | ours - paper | train error, last epoch | "
          "test error 5 epochs before the end |")
    print("|---|---|---|---|---|---|---|")
    for d in TABLE1_DISTORTIONS:
        for model in [m for dd, m in TABLE1_CELLS if dd == d]:
            runs = _runs(args.results / d / model)
            if not runs:
                continue
            test = statistics.mean(r["test_error"] for r in runs)
            train = statistics.mean(r["history"][-1]["train_error"] for r in runs)
            before = statistics.mean(r["history"][-6]["test_error"] for r in runs)
            paper = PAPER_TABLE1[model][d]
            print(f"| {d.upper()} {model} | {len(runs)} | {test:.2f} | {paper} | "
                  f"{test - paper:+.2f} | {train:.2f} | {before:.2f} |")


if __name__ == "__main__":
    main()
