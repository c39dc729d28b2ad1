"""The paper's Table 1 task: classify distorted MNIST (or Fashion-MNIST) digits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.distortions import DISTORTIONS, check_train_distortion, output_size
from ..data.idx import DATASETS, download
from ..data.mnist import DistortedMNIST, shard_rows
from ..models import MODELS, build_model
from ..options import SEED_MAX, option
from ..plots.figures import save_run_figures
from .base import (
    TASKS,
    Task,
    classification_means,
    classification_step,
    classification_sums,
)

__all__ = ["DigitsConfig", "DistortedDigits"]


@dataclass
class DigitsConfig:
    """The ``[task]`` table of a distorted-digits run."""

    name: str = option("distorted-digits", "the task (`torchstn tasks` lists them)")
    dataset: str = option("mnist", "digits", choices=lambda: list(DATASETS))
    distortion: str = option("rts", "distortion of the paper's appendix",
                             choices=lambda: DISTORTIONS.names())
    model: str = option("st-cnn-affine", "Table 1 model", choices=lambda: MODELS.names())
    train_size: int | None = option(None, "first N training digits (default: all 60000)",
                                    minimum=1)
    test_size: int | None = option(None, "first N test digits (default: all 10000)",
                                   minimum=1)
    val_size: int = option(0, "hold out this many training digits (fixed, seeded) and score "
                               "on them instead of the test set: for choosing a recipe",
                           minimum=0)
    test_seed: int = option(2015, "seed of the test set's distortions", minimum=0,
                            maximum=SEED_MAX)
    st_downsample: bool | None = option(None, "transformer output at half size (default: "
                                              "for rts and tc)")

    st_pool: bool = option(False, "with st_downsample: sample at full size and average-pool "
                                  "by 2, instead of sampling at half size")
    train_distortion: str | None = option(None, "distortion of the training digits "
                                                "(default: --distortion, the test set's; "
                                                "of the same image size)",
                                          choices=lambda: DISTORTIONS.names())
    fixed_distortions: bool = option(False, "distort each training digit once and keep it "
                                            "(a fixed training set) instead of afresh every "
                                            "epoch")

    def resolve(self) -> None:
        if self.st_downsample is None:
            self.st_downsample = self.distortion in ("rts", "tc")
        check_train_distortion("task.train_distortion", self.train_distortion,
                               self.distortion)


@TASKS.register("distorted-digits")
class DistortedDigits(Task):
    """Classification of distorted digits into 10 classes with cross-entropy (Table 1).

    Batches are ``(x (B, 1, S, S) float32 in [0, 1], y (B,))``; the test set is made once,
    rounded to uint8, and scored in chunks of 1,000.
    """

    name = "distorted-digits"
    Config = DigitsConfig

    def __init__(self, cfg: DigitsConfig, *, data_dir=None, device="cpu", seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        self.data = DistortedMNIST(cfg.dataset, cfg.distortion, data_dir=data_dir,
                                   train_size=cfg.train_size, test_size=cfg.test_size,
                                   val_size=cfg.val_size, seed=seed,
                                   test_seed=cfg.test_seed, device=self.device,
                                   train_distortion=cfg.train_distortion,
                                   fixed_distortions=cfg.fixed_distortions)

    @classmethod
    def download(cls, cfg: DigitsConfig, data_dir=None) -> None:
        download(cfg.dataset, data_dir)

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, output_size(self.cfg.distortion),
                           st_downsample=bool(self.cfg.st_downsample),
                           st_pool=self.cfg.st_pool)

    def num_train_examples(self) -> int:
        return len(self.data.train_x)

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        return self.data.train_batches(epoch, batch_size, rank=rank, world=world)

    def train_step(self, model: nn.Module, batch: Any):
        return classification_step(model, batch)

    def train_metrics(self, sums) -> dict[str, float]:
        return classification_means("train", sums)

    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1,
                 chunk: int = 1000):
        x, y = self.data.test_set()
        rows = shard_rows(len(x), rank, world)
        return classification_sums(model, x[rows], y[rows], self.device, chunk)

    def eval_metrics(self, sums) -> dict[str, float]:
        return classification_means("val" if self.cfg.val_size else "test", sums)

    def summary(self) -> dict[str, Any]:
        return {"model": self.cfg.model, "distortion": self.cfg.distortion,
                "dataset": self.cfg.dataset}

    def describe(self) -> str:
        c = self.cfg
        trained = ""
        if c.train_distortion not in (None, c.distortion) or c.fixed_distortions:
            trained = (f" (trained on {'fixed ' * c.fixed_distortions}"
                       f"{(c.train_distortion or c.distortion).upper()})")
        return f"{c.model} on {c.dataset} {c.distortion.upper()}{trained}"

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (self.test_images(batch_size),)

    def test_images(self, n: int = 10) -> torch.Tensor:
        """The first ``n`` test images as floats in [0, 1], on the task's device."""
        return self.data.test_set()[0][:n].to(self.device).float() / 255

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        return save_run_figures(out, model, self.test_images(), history, self.describe())
