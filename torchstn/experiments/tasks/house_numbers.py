"""Multi-digit house-number recognition (paper, Table 2; appendix A.5): synthetic
numbers from MNIST (``house-numbers``) and real SVHN (``svhn``).

The model reads a number through a length classifier (1 to 5 digits) and five digit
classifiers (0 to 9, or 10: no digit); the loss is the sum of their cross-entropies (the
number's negative log-likelihood, Goodfellow et al. 2013). A number is read as the most
likely sequence: the length ``L`` maximising ``log p(L) + sum_{i<L} max_d log p_i(d) +
sum_{i>=L} log p_i(no digit)``, with the most likely digits. Metrics: ``error`` (%
numbers not read exactly: the paper's sequence error), ``digit_error`` (% of the true
digits misread by their classifier), ``length_accuracy`` (%).

Training images are random ``crop x crop`` windows (54 of 64, 108 of 128, as Goodfellow
et al. crop 54 of 64); test images their central window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.house_numbers import CANVAS, HouseNumbers, SVHNData, centre_crop
from ..data.idx import download, resolve_data_dir
from ..data.mnist import shard_rows
from ..data.svhn import MAX_DIGITS, NO_DIGIT
from ..models import HOUSE_CLASSES, HOUSE_LENGTHS, HOUSE_MIN_SIDE, HOUSE_MODELS, build_house_model
from ..options import SEED_MAX, option
from ..plots.figures import curves_figure, house_numbers_figure
from .base import TASKS, Task

__all__ = ["HouseNumbersConfig", "SVHNConfig", "read_numbers", "sequence_loss"]


def _crop_of(side: int) -> int:
    return side * 54 // 64


def _check_st_size(cfg, side: int) -> None:
    """``task.st_size`` needs a transformer and may not exceed the crop it reads."""
    if cfg.st_size is None:
        return
    if cfg.model == "cnn":
        raise ValueError(f"task.st_size must be left unset for model 'cnn' (it has no "
                         f"transformer), got {cfg.st_size}")
    if cfg.st_size > _crop_of(side):
        raise ValueError(f"task.st_size must be at most the crop's side {_crop_of(side)}, "
                         f"got {cfg.st_size}")


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 60)`` logits -> length logits ``(N, 5)`` and digit logits ``(N, 5, 11)``."""
    return (logits[:, :HOUSE_LENGTHS],
            logits[:, HOUSE_LENGTHS:].reshape(-1, MAX_DIGITS, HOUSE_CLASSES))


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the length plus that of each of the five digit positions."""
    length_logits, digit_logits = split_logits(logits.float())
    lengths = (labels != NO_DIGIT).sum(1)
    loss = F.cross_entropy(length_logits, lengths - 1, reduction="none")
    loss = loss + F.cross_entropy(digit_logits.transpose(1, 2), labels,
                                  reduction="none").sum(1)
    return loss.mean() if reduction == "mean" else loss.sum()


def read_numbers(logits: torch.Tensor) -> torch.Tensor:
    """The most likely number of each row: ``(N, 5)`` labels, 10 after its end."""
    length_logits, digit_logits = split_logits(logits.float())
    log_len = length_logits.log_softmax(1)  # (N, 5): lengths 1..5
    log_digit = digit_logits.log_softmax(2)
    best, digit = log_digit[..., :NO_DIGIT].max(2)  # (N, 5)
    none = log_digit[..., NO_DIGIT]
    # score(L) = log p(L) + sum_{i<L} best_i + sum_{i>=L} none_i
    head = torch.cat([torch.zeros_like(best[:, :1]), best.cumsum(1)], 1)[:, 1:]
    tail = none.flip(1).cumsum(1).flip(1)  # tail[:, i] = sum_{j>=i} none_j
    tail = torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], 1)
    length = (log_len + head + tail).argmax(1) + 1
    used = torch.arange(MAX_DIGITS, device=logits.device) < length.unsqueeze(1)
    return torch.where(used, digit, torch.full_like(digit, NO_DIGIT))


def _sums(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    read = read_numbers(logits)
    length_logits, digit_logits = split_logits(logits.float())
    lengths = (labels != NO_DIGIT).sum(1)
    real = labels != NO_DIGIT
    digit_wrong = (digit_logits[..., :NO_DIGIT].argmax(2) != labels) & real
    return {"errors": (read != labels).any(1).sum(), "digit_errors": digit_wrong.sum(),
            "digits": real.sum(), "length_right": (length_logits.argmax(1) + 1 == lengths).sum()}


class _HouseNumberTask(Task):
    """What the synthetic and the real task share: the models, loss, metrics."""

    in_channels = 1

    @property
    def crop(self) -> int:
        return _crop_of(self.side)

    def build_model(self) -> nn.Module:
        return build_house_model(self.cfg.model, self.crop, in_channels=self.in_channels,
                                 width=self.cfg.width, dropout=self.cfg.dropout,
                                 st_size=self.cfg.st_size)

    def num_train_examples(self) -> int:
        return self.data.train_size

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        return self.data.train_batches(epoch, batch_size, rank=rank, world=world,
                                       crop=self.crop)

    def train_step(self, model: nn.Module, batch: Any):
        x, y = batch
        logits = model(x)
        loss = sequence_loss(logits, y) if len(y) else logits.sum() * 0.0
        sums = {"loss": loss.detach().double() * len(y), **_sums(logits.detach(), y),
                "count": len(y)}
        return loss, sums

    def train_metrics(self, sums) -> dict[str, float]:
        return {"train_loss": sums["loss"] / sums["count"],
                "train_error": 100.0 * sums["errors"] / sums["count"]}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1, chunk: int = 500):
        model.eval()
        x, y = self.data.test_set()
        rows = shard_rows(len(x), rank, world)
        x, y = x[rows], y[rows]
        totals = {"loss": 0.0, "errors": 0, "digit_errors": 0, "digits": 0, "length_right": 0}
        for start in range(0, len(x), chunk):
            xb = centre_crop(x[start : start + chunk], self.crop).to(self.device).float() / 255
            yb = y[start : start + chunk].to(self.device)
            logits = model(xb)
            totals["loss"] += sequence_loss(logits, yb, reduction="sum").item()
            for key, value in _sums(logits, yb).items():
                totals[key] += int(value)
        return {**totals, "count": len(x)}

    def eval_metrics(self, sums) -> dict[str, float]:
        n = max(sums["count"], 1)
        return {"test_loss": sums["loss"] / n, "test_error": 100.0 * sums["errors"] / n,
                "test_digit_error": 100.0 * sums["digit_errors"] / max(sums["digits"], 1),
                "test_length_accuracy": 100.0 * sums["length_right"] / n}

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        x = self.data.test_set()[0][:batch_size]
        return (centre_crop(x, self.crop).to(self.device).float() / 255,)

    def summary(self) -> dict[str, Any]:
        return {"model": self.cfg.model, "width": self.cfg.width, "input": self.crop,
                "st_size": self.cfg.st_size}

    def figures(self, out, model: nn.Module, history: list[dict]) -> list:
        """``regions.png`` (the paper's Fig. 4: where each transformer reads the input),
        ``curves.png``."""
        out = Path(out)
        x = centre_crop(self.data.test_set()[0][:10], self.crop).to(self.device).float() / 255
        label = self.describe()
        if history:
            label += (f" - sequence error {history[-1]['test_error']:.2f}% after "
                      f"{history[-1]['epoch']} epochs")
        paths = [house_numbers_figure(model, x, out / "regions.png", title=label)]
        if history:
            paths.append(curves_figure(history, out / "curves.png", title=label))
        return paths


@dataclass
class HouseNumbersConfig:
    """The ``[task]`` table of a synthetic house-number run."""

    name: str = option("house-numbers", "the task (`torchstn tasks` lists them)")
    variant: str = option("tight", "tight 64x64 crops or loose 128x128 ones with clutter",
                          choices=lambda: list(CANVAS))
    model: str = option("st-cnn-multi", "house-number model",
                        choices=lambda: HOUSE_MODELS.names())
    width: float = option(1.0, "scale every layer's width (1: the paper's)", minimum=0.01)
    dropout: float = option(0.5, "dropout after every hidden layer but the first "
                                 "convolution (the paper: 0.5)", minimum=0.0, maximum=0.9)
    st_size: int | None = option(None, "side of the first transformer's output (default: "
                                       "its input's; 54 at 128 px samples the 64 px "
                                       "model's input)", minimum=HOUSE_MIN_SIDE)
    train_size: int = option(60000, "numbers per training epoch", minimum=1)
    test_size: int = option(10000, "test numbers", minimum=1)
    train_digits: int | None = option(None, "make training numbers of the first N MNIST "
                                            "training digits (default: all)", minimum=1)
    val_size: int = option(0, "hold out this many MNIST training digits (fixed, seeded) and "
                               "score numbers made of them instead of the test set",
                           minimum=0)
    test_seed: int = option(2015, "seed of the test numbers", minimum=0, maximum=SEED_MAX)

    def resolve(self) -> None:
        _check_st_size(self, CANVAS[self.variant])


@TASKS.register("house-numbers")
class SyntheticHouseNumbers(_HouseNumberTask):
    """Numbers of 1 to 5 MNIST digits under a random affine distortion (Table 2's stand-in)."""

    name = "house-numbers"
    Config = HouseNumbersConfig

    def __init__(self, cfg: HouseNumbersConfig, *, data_dir=None, device="cpu", seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        self.side = CANVAS[cfg.variant]
        self.data = HouseNumbers(cfg.variant, data_dir=data_dir, train_size=cfg.train_size,
                                 test_size=cfg.test_size, train_digits=cfg.train_digits,
                                 val_size=cfg.val_size, seed=seed, test_seed=cfg.test_seed,
                                 device=self.device)

    @classmethod
    def download(cls, cfg: HouseNumbersConfig, data_dir=None) -> None:
        download("mnist", data_dir)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "dataset": f"house-numbers-{self.cfg.variant}"}

    def describe(self) -> str:
        return f"{self.cfg.model} (width {self.cfg.width:g}) on {self.cfg.variant} house numbers"


@dataclass
class SVHNConfig:
    """The ``[task]`` table of an SVHN run (format 1 files under ``<data-dir>/svhn/``)."""

    name: str = option("svhn", "the task (`torchstn tasks` lists them)")
    size: int = option(64, "64: tight crops; 128: loose crops", choices=lambda: [64, 128])
    model: str = option("st-cnn-multi", "house-number model",
                        choices=lambda: HOUSE_MODELS.names())
    width: float = option(1.0, "scale every layer's width (1: the paper's)", minimum=0.01)
    dropout: float = option(0.5, "dropout after every hidden layer but the first "
                                 "convolution (the paper: 0.5)", minimum=0.0, maximum=0.9)
    st_size: int | None = option(None, "side of the first transformer's output (default: "
                                       "its input's; 54 at 128 px samples the 64 px "
                                       "model's input)", minimum=HOUSE_MIN_SIDE)
    extra: bool = option(True, "train on the extra split too (as the paper)")
    train_size: int | None = option(None, "first N training numbers (default: all)",
                                    minimum=1)
    test_size: int | None = option(None, "first N test numbers (default: all)", minimum=1)
    val_size: int = option(0, "hold out this many training numbers (fixed, seeded) and score "
                               "on them instead of the test split", minimum=0)

    def resolve(self) -> None:
        _check_st_size(self, self.size)


@TASKS.register("svhn")
class SVHN(_HouseNumberTask):
    """Real SVHN house numbers (Table 2)."""

    name = "svhn"
    Config = SVHNConfig
    in_channels = 3

    def __init__(self, cfg: SVHNConfig, *, data_dir=None, device="cpu", seed: int = 0):
        super().__init__(cfg, data_dir=data_dir, device=device, seed=seed)
        self.side = cfg.size
        self.data = SVHNData(cfg.size, data_dir=data_dir, extra=cfg.extra,
                             train_size=cfg.train_size, test_size=cfg.test_size,
                             val_size=cfg.val_size, seed=seed, device=self.device)

    @classmethod
    def download(cls, cfg: SVHNConfig, data_dir=None) -> None:
        raise ValueError("SVHN is not downloaded by torchstn (1.3 GB in format 1): put the "
                         "published train.tar.gz, test.tar.gz and extra.tar.gz of "
                         "http://ufldl.stanford.edu/housenumbers/ (or their unpacked "
                         f"folders) in {resolve_data_dir(data_dir) / 'svhn'}")

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "dataset": f"svhn-{self.cfg.size}",
                "dropped_over_5_digits": self.data.dropped}

    def describe(self) -> str:
        return f"{self.cfg.model} (width {self.cfg.width:g}) on SVHN {self.cfg.size}px"
