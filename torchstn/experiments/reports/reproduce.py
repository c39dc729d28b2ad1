"""``torchstn reproduce table1``: the paper's Table 1 grid of runs, side by side with the paper."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

from ..config import RunConfig, make_config
from ..engine import atomic_write_text, is_primary_process, train

__all__ = ["PAPER_TABLE1", "TABLE1_CELLS", "TABLE1_MODELS", "run_table1", "table1_cell",
           "table1_markdown"]

# Jaderberg et al. 2015, Table 1 (left): % test error on distorted MNIST.
PAPER_TABLE1 = {
    "fcn": {"r": 2.1, "rts": 5.2, "p": 3.1, "e": 3.2, "tc": 13.2},
    "cnn": {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 1.4, "tc": 3.5},
    "st-fcn-affine": {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 2.7, "tc": 2.0},
    "st-fcn-projective": {"r": 1.3, "rts": 0.9, "p": 1.4, "e": 2.6},
    "st-fcn-tps": {"r": 1.1, "rts": 0.8, "p": 1.4, "e": 2.4},
    "st-cnn-affine": {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.2, "tc": 1.7},
    "st-cnn-projective": {"r": 0.8, "rts": 0.6, "p": 0.8, "e": 1.3},
    "st-cnn-tps": {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.1},
}
TABLE1_MODELS = list(PAPER_TABLE1)
TABLE1_DISTORTIONS = ["r", "rts", "p", "e", "tc"]
#: Every (distortion, model) cell of the table the paper reports.
TABLE1_CELLS = [(d, m) for d in TABLE1_DISTORTIONS for m in TABLE1_MODELS
                if d in PAPER_TABLE1[m]]
_LABELS = {"fcn": "FCN", "cnn": "CNN", "st-fcn-affine": "ST-FCN Aff",
           "st-fcn-projective": "ST-FCN Proj", "st-fcn-tps": "ST-FCN TPS",
           "st-cnn-affine": "ST-CNN Aff", "st-cnn-projective": "ST-CNN Proj",
           "st-cnn-tps": "ST-CNN TPS"}


def _run_dir(root: Path, distortion: str, model: str, seed: int) -> Path:
    return root / distortion / model / f"seed{seed}"


def _cell(errors: list[float]) -> str:
    if not errors:
        return "-"
    if len(errors) == 1:
        return f"{errors[0]:.2f}"
    return f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"


def table1_cell(base: RunConfig, distortion: str, model: str, seed: int) -> RunConfig:
    """The run of one cell: ``base`` with the cell's distortion, model and seed (and the
    distortion's default ``st_downsample``)."""
    task = dataclasses.replace(base.task, distortion=distortion, model=model,
                               st_downsample=None)
    train_cfg = dataclasses.replace(base.train, seed=seed)
    return dataclasses.replace(base, task=task, train=train_cfg).resolved()


def table1_markdown(root: Path, distortions, models, seeds: int, base: RunConfig) -> str:
    """Markdown table of our test errors (mean ± std over seeds) beside the paper's."""
    head = "| model | " + " | ".join(f"{d.upper()} ours | {d.upper()} paper" for d in distortions)
    lines = [head + " |", "|---" * (1 + 2 * len(distortions)) + "|"]
    for model in models:
        row = [_LABELS.get(model, model)]
        for d in distortions:
            errors = []
            for seed in range(seeds):
                metrics = _run_dir(root, d, model, seed) / "metrics.json"
                if metrics.is_file():
                    data = json.loads(metrics.read_text())
                    if data["epochs_done"] >= base.train.epochs:
                        errors.append(data["test_error"])
            paper = PAPER_TABLE1.get(model, {}).get(d)
            row += [_cell(errors), "-" if paper is None else f"{paper}"]
        lines.append("| " + " | ".join(row) + " |")
    train_size = base.task.train_size or 60000
    test_size = base.task.test_size or 10000
    epochs = base.train.epochs
    note = (f"\n% test error on distorted {base.task.dataset.upper()}. Ours: "
            f"{epochs} epoch{'s' * (epochs != 1)} of {train_size} training images "
            f"({base.optim.optimizer}, lr {base.optim.lr}), {seeds} seed{'s' * (seeds != 1)}, "
            f"{test_size} test images distorted once with a fixed seed. Paper: 150k "
            "iterations of batch 256.\n")
    return "\n".join(lines) + "\n" + note


def run_table1(out, *, distortions=None, models=None, seeds: int = 1,
               base: RunConfig | None = None, data_dir=None, progress: bool = True) -> str:
    """Train every (distortion, model, seed) not yet finished; write ``out/table1.md``.

    Runs that finished are skipped; runs that were killed are resumed. Only the cells the
    paper reports are run (:data:`TABLE1_CELLS`: on TC, FCN, CNN and the two affine ST
    models). Default: every distortion, R, RTS, P, E and TC.
    """
    out = Path(out)
    base = (base or make_config()).resolved()
    distortions = list(distortions or TABLE1_DISTORTIONS)
    models = list(models or TABLE1_MODELS)
    for d in distortions:
        if d not in TABLE1_DISTORTIONS:
            raise ValueError(f"distortions must be among {TABLE1_DISTORTIONS}, got {d!r}")
    for model in models:
        for d in distortions:
            if (d, model) not in TABLE1_CELLS:
                continue  # the paper has no such cell
            for seed in range(seeds):
                run = _run_dir(out, d, model, seed)
                metrics = run / "metrics.json"
                done = metrics.is_file() and json.loads(metrics.read_text())["epochs_done"]
                if done and done >= base.train.epochs:
                    continue
                cfg = table1_cell(base, d, model, seed)
                if is_primary_process():
                    print(f"== {model} on {d} (seed {seed}) -> {run}", file=sys.stderr)
                train(cfg, run, data_dir=data_dir, resume=True, progress=progress)
                _write_table(out, distortions, models, seeds, base)
    return _write_table(out, distortions, models, seeds, base)


def _write_table(out: Path, distortions, models, seeds: int, base: RunConfig) -> str:
    table = table1_markdown(out, distortions, models, seeds, base)
    if is_primary_process():  # under torchrun every rank runs the grid, rank 0 writes
        atomic_write_text(out / "table1.md", table)
    return table
