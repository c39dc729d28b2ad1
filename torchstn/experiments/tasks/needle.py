"""Needle in a haystack (the zoom benchmark): classify a small object on a 512 px photograph
among distractors (:mod:`torchstn.experiments.data.needle`), with one classifier behind
different fronts (:mod:`torchstn.experiments.zoom`): the whole image downsampled, a
glimpse transformer with and without anti-aliasing, the saliency sampler, or the
classifier at full resolution.

Besides the error, glimpse models report what their transformer reads on the test set:
``view_share`` (% of the image inside the glimpse, mean) and ``object_in_view`` (% of test
images whose object's centre lies inside the glimpse).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_write_text
from ..data.idx import DATASETS, download, load_idx_dataset
from ..data.mnist import epoch_generator, shard_rows
from ..data.needle import NeedleImages, load_photos
from ..options import SEED_MAX, option
from ..plots.figures import curves_figure, glimpse_tracks_figure, save_views
from ..zoom import FRONTS, build_zoom_model
from .base import TASKS, Task, classification_means, classification_step

__all__ = ["NeedleConfig", "NeedleTask"]

#: Test images whose glimpses ``after_epoch`` records (``views.json``).
TRACKED = 6


@dataclass
class NeedleConfig:
    """The ``[task]`` table of a needle run."""

    name: str = option("needle", "the task (`torchstn tasks` lists them)")
    model: str = option("glimpse", "what the classifier sees: resize, full, glimpse, "
                                   "glimpse-plain, saliency", choices=lambda: list(FRONTS))
    dataset: str = option("fashion-mnist", "the objects", choices=lambda: list(DATASETS))
    canvas: int = option(512, "side of the images", minimum=64)
    object_min: int = option(24, "smallest object side, pixels", minimum=8)
    object_max: int = option(64, "largest object side, pixels", minimum=8)
    train_size: int = option(10000, "fresh training images per epoch", minimum=1)
    test_size: int = option(1000, "test images (objects from the test split)", minimum=1)
    val_size: int = option(0, "score on this many fresh images of training objects instead "
                              "of the test set (its own seed): for choosing a recipe",
                           minimum=0)
    test_seed: int = option(2018, "seed of the test images", minimum=0, maximum=SEED_MAX)
    input_size: int = option(64, "the classifier's input side", minimum=4)
    loc_size: int = option(128, "side of the copy the transformer or saliency net sees",
                           minimum=4)
    width: int = option(32, "channels of the classifier's first convolution", minimum=1)


def _means(split: str, sums) -> dict[str, float]:
    out = classification_means(split, sums)
    if "in_view" in sums:
        count = max(1, sums["count"])
        out[f"{split}_object_in_view"] = 100.0 * sums["in_view"] / count
        out[f"{split}_view_share"] = 100.0 * sums["share"] / count
    return out


def glimpse_boxes(params: torch.Tensor) -> torch.Tensor:
    """The glimpses of attention parameters ``(N, 3)`` (``log s, tx, ty``) as ``(N, 4)``
    normalised ``(x0, y0, x1, y1)``."""
    s = torch.exp(params[:, 0].clamp(-10, 10))
    return torch.stack([params[:, 1] - s, params[:, 2] - s, params[:, 1] + s,
                        params[:, 2] + s], 1)


@TASKS.register("needle")
class NeedleTask(Task):
    """Classification of the object of needle images into 10 classes, cross-entropy."""

    name = "needle"
    Config = NeedleConfig

    def __init__(self, cfg: NeedleConfig, *, data_dir=None, device="cpu", seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        if cfg.object_max < cfg.object_min or cfg.object_max > cfg.canvas // 2:
            raise ValueError(f"task.object_max must be between object_min = {cfg.object_min} "
                             f"and half the canvas ({cfg.canvas // 2}), got {cfg.object_max}")
        photos = load_photos()
        options = dict(canvas=cfg.canvas, object_size=(cfg.object_min, cfg.object_max))
        train = load_idx_dataset(cfg.dataset, "train", data_dir)
        test = load_idx_dataset(cfg.dataset, "test", data_dir)
        self.train_images = NeedleImages(*train, photos, **options)
        self.test_images = NeedleImages(*(train if cfg.val_size else test), photos, **options)
        self._test: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def download(cls, cfg: NeedleConfig, data_dir=None) -> None:
        download(cfg.dataset, data_dir)

    def build_model(self) -> nn.Module:
        c = self.cfg
        return build_zoom_model(c.model, in_channels=3, num_classes=10,
                                input_size=c.input_size, loc_size=c.loc_size, width=c.width)

    def num_train_examples(self) -> int:
        return self.cfg.train_size

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        gen = epoch_generator(self.seed, epoch)
        n = self.cfg.train_size
        for start in range(0, n, batch_size):
            x, y, _ = self.train_images.make(min(batch_size, n - start), gen)
            rows = shard_rows(len(y), rank, world)
            yield x[rows].to(self.device).float() / 255, y[rows].to(self.device)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed test (or validation) images, labels and boxes, made once."""
        if self._test is None:
            seed = self.cfg.test_seed + (1 if self.cfg.val_size else 0)
            n = self.cfg.val_size or self.cfg.test_size
            self._test = self.test_images.make(n, torch.Generator().manual_seed(seed))
        return self._test

    def train_step(self, model: nn.Module, batch: Any):
        return classification_step(model, batch)

    def train_metrics(self, sums) -> dict[str, float]:
        return _means("train", sums)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1, chunk: int = 50):
        model.eval()
        x, y, boxes = self.test_set()
        rows = shard_rows(len(x), rank, world)
        x, y, boxes = x[rows], y[rows], boxes[rows]
        sums = {"loss": 0.0, "errors": 0, "count": len(x)}
        s = self.cfg.canvas
        for start in range(0, len(x), chunk):
            xb = x[start: start + chunk].to(self.device).float() / 255
            yb = y[start: start + chunk].to(self.device)
            logits, params = model(xb, return_params=True)
            sums["loss"] += F.cross_entropy(logits, yb, reduction="sum").item()
            sums["errors"] += (logits.argmax(1) != yb).sum().item()
            if params is not None:
                view = glimpse_boxes(params)
                centre = (boxes[start: start + chunk, :2] + boxes[start: start + chunk, 2:]) / 2
                c = (2 * centre.to(view) + 1) / s - 1  # normalised (align_corners=False)
                inside = ((c >= view[:, :2]) & (c <= view[:, 2:])).all(1)
                sums["in_view"] = sums.get("in_view", 0) + inside.sum().item()
                clipped = (view.clamp(-1, 1)[:, 2:] - view.clamp(-1, 1)[:, :2]).prod(1) / 4
                sums["share"] = sums.get("share", 0.0) + clipped.sum().item()
        return sums

    def eval_metrics(self, sums) -> dict[str, float]:
        return _means("val" if self.cfg.val_size else "test", sums)

    def after_epoch(self, out: Path, model: nn.Module, history: list[dict]) -> None:
        """Append the glimpses of the first test images to ``out/views.json``."""
        x = self.test_set()[0][:TRACKED].to(self.device).float() / 255
        model.eval()
        with torch.no_grad():
            _, params = model(x, return_params=True)
        model.train()
        if params is None:
            return
        view = glimpse_boxes(params)
        path = Path(out) / "views.json"
        tracks = json.loads(path.read_text()) if path.is_file() else []
        tracks = tracks[: len(history) - 1]  # a resumed run rewrites what it redoes
        tracks.append([[round(v, 4) for v in b] for b in view.tolist()])
        atomic_write_text(path, json.dumps(tracks) + "\n")

    def summary(self) -> dict[str, Any]:
        return {"model": self.cfg.model, "dataset": self.cfg.dataset}

    def describe(self) -> str:
        return f"{self.cfg.model} on needle {self.cfg.canvas} px ({self.cfg.dataset})"

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (self.test_set()[0][:batch_size].to(self.device).float() / 255,)

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        x = self.test_set()[0][:TRACKED].to(self.device).float() / 255
        model.eval()
        with torch.no_grad():
            seen = model.view(x)
        paths = [save_views(Path(out) / "views.png", x, seen, self.describe())]
        tracks_path = Path(out) / "views.json"
        if tracks_path.is_file():  # glimpse models: where they looked, epoch by epoch
            try:
                tracks = json.loads(tracks_path.read_text())
            except ValueError as e:
                raise ValueError(f"{tracks_path}: not the glimpses a run writes ({e})") from None
            if tracks:
                boxes = self.test_set()[2][:TRACKED]
                paths.append(glimpse_tracks_figure(Path(out) / "glimpses.png", x, tracks,
                                                   boxes, self.describe()))
        if history:
            paths.append(curves_figure(history, Path(out) / "curves.png", title=self.describe()))
        return paths
