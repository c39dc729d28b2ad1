"""Per-cell gap of our Table 1 to the paper's, with what the training curves say about it.

    python scripts/table1_gaps.py [--results results/table1]

For every cell the paper reports and we have finished runs of at the Table 1 recipe: our
mean test error over the finished seeds, the paper's, the difference, the last epoch's
training error (the running error of the epoch in training mode, on freshly distorted
digits) and the test error five epochs before the end, so a cell that is still improving
or one that fits its training digits no better than its test digits shows as such.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from torchstn.experiments.reports.reproduce import (
    PAPER_TABLE1,
    TABLE1_CELLS,
    TABLE1_DISTORTIONS,
    finished_runs,
    table1_base,
    table1_cell,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/table1"))
    args = parser.parse_args()
    base = table1_base().resolved()
    print("| cell | seeds | ours | paper | ours - paper | train error, last epoch | "
          "test error 5 epochs before the end |")
    print("|---|---|---|---|---|---|---|")
    for d in TABLE1_DISTORTIONS:
        for model in [m for dd, m in TABLE1_CELLS if dd == d]:
            runs = [r for r in finished_runs(args.results / d / model, 3,
                                             table1_cell(base, d, model, 0))
                    if len(r["history"]) >= 6]
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
