"""``torchstn reproduce augmentation``: can a spatial transformer replace data
augmentation? (issue 30; the write-up: docs/augmentation.md once the grid has run).

The Table 1 recipe and models (CNN and ST-CNN affine) on R and RTS, under training
protocols that differ only in what the training set shows; the test set is always the
usual distorted one (the full range, fixed):

=============  ==========================================================================
protocol       training set
=============  ==========================================================================
fresh          distorted afresh every epoch (augmentation; Table 1's protocol)
fixed          each digit distorted once and kept (a fixed dataset)
fresh-6k       ``fresh`` on the first tenth of the digits (6,000; as many steps: 10x the
               epochs)
fixed-6k       ``fixed`` on the first tenth of the digits (as many steps)
narrow         distorted afresh within a narrow range (``r15``, ``rts15``: rotations
               within 15 degrees) while the test spans the full one
upright        undistorted digits (R only: tested on rotations it never saw)
=============  ==========================================================================

Transformer and augmentation together against either alone read from the same table:
CNN ``fresh`` (augmentation alone), ST-CNN ``fixed`` (the transformer alone), ST-CNN
``fresh`` (both), CNN ``fixed`` (neither).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from torchstn.modules import find_transformers

from ..config import RunConfig, make_config
from ..engine import atomic_write_text, is_primary_process, load_run
from ..plots.figures import rotation_scatter_figure
from .poses import matrix_pose, undo_statistics
from .reproduce import (
    TABLE1_LABELS,
    TABLE1_RECIPE,
    finished_run_folders,
    run_grid,
    seed_errors,
    seeds_phrase,
    table_cell,
)

__all__ = ["AUGMENTATION_DISTORTIONS", "AUGMENTATION_MODELS", "NARROW", "PROTOCOLS",
           "augmentation_base", "augmentation_cell", "augmentation_markdown",
           "run_augmentation"]

AUGMENTATION_DISTORTIONS = ("r", "rts")
AUGMENTATION_MODELS = ("cnn", "st-cnn-affine")
#: The narrow training distortion of each test distortion.
NARROW = {"r": "r15", "rts": "rts15"}
#: The -6k protocols train on this fraction of the digits (of ``train_size``: 60,000 by
#: default), for this many times the epochs (as many steps).
SMALL_SHARE, SMALL_EPOCHS = 10, 10
_MNIST_TRAIN = 60000
PROTOCOLS = ("fresh", "fixed", "fresh-6k", "fixed-6k", "narrow", "upright")


def augmentation_base(**options) -> RunConfig:
    """What the grid starts from: the Table 1 recipe, under ``options``."""
    return make_config("distorted-digits", **{**TABLE1_RECIPE, **options})


def applies(protocol: str, distortion: str) -> bool:
    """Whether the grid has a cell of ``protocol`` on ``distortion`` (``upright`` needs
    a training image of the test image's size: R only)."""
    return protocol != "upright" or distortion == "r"


def augmentation_cell(base: RunConfig, distortion: str, protocol: str,
                      model: str) -> RunConfig:
    """The run of ``model`` on ``distortion`` under ``protocol`` (:data:`PROTOCOLS`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    if not applies(protocol, distortion):
        raise ValueError(f"protocol {protocol!r} has no cell on {distortion!r} (R only)")
    task = {"distortion": distortion, "model": model, "st_downsample": None,
            "fixed_distortions": protocol in ("fixed", "fixed-6k"),
            "train_distortion": {"narrow": NARROW[distortion],
                                 "upright": "none"}.get(protocol)}
    train = base.train
    if protocol.endswith("-6k"):
        task["train_size"] = (base.task.train_size or _MNIST_TRAIN) // SMALL_SHARE
        train = dataclasses.replace(train, epochs=train.epochs * SMALL_EPOCHS)
    return dataclasses.replace(base, train=train,
                               task=dataclasses.replace(base.task, **task)).resolved()


def _cells(base, distortions, protocols, models, out: Path):
    return [((protocol, distortion, model), out / distortion / protocol / model,
             augmentation_cell(base, distortion, protocol, model))
            for distortion in distortions for protocol in protocols
            if applies(protocol, distortion) for model in models]


POSES = "poses.json"
#: Test digits whose rotations ``poses.json`` keeps for the figure.
FIGURE_POINTS = 500


@torch.no_grad()
def run_poses(run: Path, data_dir=None, chunk: int = 1000) -> dict[str, float] | None:
    """What the transformer of finished run ``run`` does to the test digits' rotations
    (:func:`~torchstn.experiments.reports.poses.undo_statistics` of its matrices against
    the drawn angles, and the mean scale it reads at), cached in ``run/poses.json``; None
    for a model without a transformer."""
    cached = run / POSES
    if cached.is_file():
        return json.loads(cached.read_text())
    _, task, model, _ = load_run(run, data_dir=data_dir)
    stns = find_transformers(model)
    if not stns:
        return None
    stn = stns[0]
    x, _ = task.data.test_set()
    angles, scales = [], []
    for start in range(0, len(x), chunk):
        xb = x[start: start + chunk].to(task.device).float() / 255
        _, params = stn(xb, return_params=True)
        angle, scale = matrix_pose(stn.transform.matrix(params.double()))
        angles.append(angle.cpu())
        scales.append(scale.cpu())
    predicted, drawn = torch.cat(angles), task.data.test_parameters()["angle"]
    stats = undo_statistics(predicted, drawn)
    stats["mean_scale"] = float(torch.cat(scales).mean())
    # the figure's points: the first test digits' drawn and predicted rotations (degrees)
    for key, values in (("drawn_deg", drawn), ("predicted_deg", predicted)):
        stats[key] = [round(v, 1) for v in torch.rad2deg(values[:FIGURE_POINTS]).tolist()]
    if is_primary_process():
        atomic_write_text(cached, json.dumps(stats, indent=1) + "\n")
    return stats


def _slopes(folder: Path, seeds: int, cfg: RunConfig, data_dir) -> str:
    """Mean slope of the finished runs' rotations against the undoing ones."""
    slopes = []
    for run, _ in finished_run_folders(folder, seeds, cfg):
        stats = run_poses(run, data_dir)
        if stats is not None:
            slopes.append(stats["slope"])
    return f"{sum(slopes) / len(slopes):.2f}" if slopes else "-"


def rotations_figure(root: Path, distortion: str, protocols, models,
                     base: RunConfig) -> Path | None:
    """``root/rotations-<distortion>.png``: for each protocol (a panel) and the seed-0 run
    of each model with a transformer, its rotation against the drawn one on the first
    test digits (None until such a run has its poses)."""
    panels = []
    for protocol in protocols:
        if not applies(protocol, distortion):
            continue
        for m in models:
            poses = root / distortion / protocol / m / "seed0" / POSES
            if poses.is_file():
                p = json.loads(poses.read_text())
                panels.append((f"{protocol}, {TABLE1_LABELS.get(m, m)}\nslope {p['slope']:.2f}",
                               p["drawn_deg"], p["predicted_deg"]))
    if not panels:
        return None
    return rotation_scatter_figure(root / f"rotations-{distortion}.png", panels,
                                   f"{distortion.upper()}: transformer rotation against the "
                                   f"drawn one (seed 0)")


def augmentation_markdown(root: Path, distortions, protocols, models, seeds: int,
                          base: RunConfig, data_dir=None) -> str:
    """% test error (mean ± std over seeds): a row per protocol, a column per distortion
    and model; for each model with a transformer, the slope of its rotations against
    those that undo the drawn ones (1: undone, 0: ignored; mean over seeds)."""
    st = [m for m in models if m.startswith("st-")]
    head = "| protocol | " + " | ".join(
        [f"{d.upper()} {TABLE1_LABELS.get(m, m)}" for d in distortions for m in models]
        + [f"{d.upper()} {TABLE1_LABELS.get(m, m)} slope" for d in distortions for m in st]) + " |"
    lines = [head, "|---" * (1 + len(distortions) * (len(models) + len(st))) + "|"]
    for protocol in protocols:
        cells = []
        for d in distortions:
            for m in models:
                if not applies(protocol, d):
                    cells.append("n/a")
                    continue
                cfg = augmentation_cell(base, d, protocol, m)
                cells.append(table_cell(seed_errors(root / d / protocol / m, seeds, cfg),
                                        seeds))
        for d in distortions:
            for m in st:
                cells.append(_slopes(root / d / protocol / m, seeds,
                                     augmentation_cell(base, d, protocol, m), data_dir)
                             if applies(protocol, d) else "n/a")
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    t, o = base.train, base.optim
    full = base.task.train_size or _MNIST_TRAIN
    note = (f"\n% test error on the distorted test set ({base.task.test_size or 10000:,} "
            f"digits), {seeds_phrase(seeds)}. Every run: the Table 1 recipe ({t.epochs} "
            f"epochs of {full:,} digits, {SMALL_EPOCHS * t.epochs} of "
            f"{full // SMALL_SHARE:,} for the -6k protocols; {o.optimizer}, lr {o.lr:g}, "
            f"{base.schedule.schedule}, {t.precision}).\n")
    return "\n".join(lines) + "\n" + note


def run_augmentation(out, *, distortions=None, protocols=None, models=None, seeds: int = 1,
                     base: RunConfig | None = None, data_dir=None,
                     progress: bool = True) -> str:
    """Train the grid (finished runs skipped, killed ones resumed); write
    ``out/augmentation.md``."""
    out = Path(out)
    base = base or augmentation_base()
    distortions = list(distortions or AUGMENTATION_DISTORTIONS)
    protocols = list(protocols or PROTOCOLS)
    models = list(models or AUGMENTATION_MODELS)
    for name, chosen, allowed in (("distortions", distortions, AUGMENTATION_DISTORTIONS),
                                  ("protocols", protocols, PROTOCOLS)):
        for value in chosen:
            if value not in allowed:
                raise ValueError(f"{name} must be among {list(allowed)}, got {value!r}")

    def write() -> str:
        table = augmentation_markdown(out, distortions, protocols, models, seeds, base,
                                      data_dir)
        if is_primary_process():
            atomic_write_text(out / "augmentation.md", table)
            for d in distortions:
                rotations_figure(out, d, protocols, models, base)
        return table

    run_grid(_cells(base, distortions, protocols, models, out), seeds, data_dir=data_dir,
             progress=progress, after_each=write)
    return write()
