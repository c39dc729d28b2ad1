"""Your own images: classify a folder of class subfolders (``--task images --data-dir DIR``)
with a glimpse transformer, the saliency sampler or a plain resize in front of a small
CNN (:mod:`torchstn.experiments.zoom`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import RESIZES, ImageFolder
from ..data.mnist import epoch_generator, shard_rows, validation_split
from ..options import option
from ..zoom import FRONTS, build_zoom_model
from .base import (
    TASKS,
    Task,
    classification_means,
    classification_step,
    classification_sums,
)

__all__ = ["ImagesConfig", "ImagesTask"]


@dataclass
class ImagesConfig:
    """The ``[task]`` table of a run on a folder of images."""

    name: str = option("images", "the task (`torchstn tasks` lists them)")
    model: str = option("glimpse", "what the classifier sees: resize (the whole image, "
                                   "downsampled), full, glimpse (an attention transformer, "
                                   "anti-aliased), glimpse-plain, saliency",
                        choices=lambda: list(FRONTS))
    image_size: int = option(256, "bring every image to this many pixels square "
                                  "(0: keep their own size, which must then be one)", minimum=0)
    resize: str = option("stretch", "how: stretch, crop (the shorter side, then the centre), "
                                    "none (the images must already have that size)",
                         choices=lambda: list(RESIZES))
    channels: int = option(3, "3 (RGB) or 1 (grayscale)", choices=lambda: [1, 3])
    input_size: int = option(64, "the classifier's input side", minimum=4)
    loc_size: int = option(64, "side of the copy the transformer or saliency net sees",
                           minimum=4)
    width: int = option(32, "channels of the classifier's first convolution", minimum=1)
    test_fraction: float = option(0.2, "share of each class held out for testing (a folder "
                                       "without train/ and test/ subfolders)", above=0)
    val_size: int = option(0, "hold out this many training images (fixed, seeded) and score "
                              "on them instead of the test set: for choosing a recipe",
                           minimum=0)


@TASKS.register("images")
class ImagesTask(Task):
    """Classification of a folder of images into its class subfolders, cross-entropy.

    Batches are ``(x (B, C, S, S) float32 in [0, 1], y (B,))``.
    """

    name = "images"
    Config = ImagesConfig

    def __init__(self, cfg: ImagesConfig, *, data_dir=None, device="cpu", seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        if data_dir is None:
            raise ValueError("--task images needs --data-dir DIR: a folder of class "
                             "subfolders of JPEG or PNG files")
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
        self.data = ImageFolder(data_dir, size=size, resize=cfg.resize, channels=cfg.channels,
                                test_fraction=cfg.test_fraction)
        x, y = self.data.train_x, self.data.train_y
        if cfg.val_size:
            if cfg.val_size >= len(x):
                raise ValueError(f"val_size must be below the {len(x)} training images, got "
                                 f"{cfg.val_size}")
            keep, held = validation_split(len(x), cfg.val_size)
            self.test_x, self.test_y = x[held], y[held]
            x, y = x[keep], y[keep]
        else:
            self.test_x, self.test_y = self.data.test_x, self.data.test_y
        self.train_x, self.train_y = x, y

    def build_model(self) -> nn.Module:
        c = self.cfg
        return build_zoom_model(c.model, in_channels=c.channels,
                                num_classes=len(self.data.classes), input_size=c.input_size,
                                loc_size=c.loc_size, width=c.width)

    def num_train_examples(self) -> int:
        return len(self.train_x)

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        order = torch.randperm(len(self.train_x), generator=epoch_generator(self.seed, epoch))
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            if world > 1:
                idx = idx[shard_rows(len(idx), rank, world)]
            yield (self.train_x[idx].to(self.device).float() / 255,
                   self.train_y[idx].to(self.device))

    def train_step(self, model: nn.Module, batch: Any):
        return classification_step(model, batch)

    def train_metrics(self, sums) -> dict[str, float]:
        return classification_means("train", sums)

    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1, chunk: int = 64):
        rows = shard_rows(len(self.test_x), rank, world)
        return classification_sums(model, self.test_x[rows], self.test_y[rows], self.device,
                                   chunk)

    def eval_metrics(self, sums) -> dict[str, float]:
        return classification_means("val" if self.cfg.val_size else "test", sums)

    def summary(self) -> dict[str, Any]:
        return {"model": self.cfg.model, "classes": self.data.classes,
                "train_images": len(self.train_x), "test_images": len(self.test_x)}

    def describe(self) -> str:
        classes = len(self.data.classes)
        return f"{self.cfg.model} on {Path(str(self.data_dir)).name} ({classes} classes)"

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (self.test_x[:batch_size].to(self.device).float() / 255,)

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        """``views.png``: test images beside what the classifier sees of them."""
        from ..plots.figures import save_views

        x = self.test_x[:6].to(self.device).float() / 255
        if not len(x):
            return []
        model.eval()
        with torch.no_grad():
            seen = model.view(x)
        return [save_views(out / "views.png", x, seen, self.describe())]
