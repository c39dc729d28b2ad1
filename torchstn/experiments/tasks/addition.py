"""MNIST addition (paper, appendix A.1): the sum of two independently distorted digits."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.addition import AdditionMNIST
from ..data.idx import download
from ..models import ADDITION_MODELS, build_addition_model
from ..options import SEED_MAX, option
from .base import TASKS, Task
from .digits import DistortedDigits

__all__ = ["AdditionConfig", "MNISTAddition"]


@dataclass
class AdditionConfig:
    """The ``[task]`` table of an MNIST-addition run."""

    name: str = option("mnist-addition", "the task (`torchstn tasks` lists them)")
    model: str = option("2xst-fcn-affine", "MNIST-addition model",
                        choices=lambda: ADDITION_MODELS.names())
    train_size: int | None = option(None, "first N training digits (default: all 60000)",
                                    minimum=1)
    test_size: int | None = option(None, "first N test pairs (default: 10000)", minimum=1)
    val_size: int = option(0, "hold out this many training digits (fixed, seeded) and score "
                               "pairs of them instead of the test set", minimum=0)
    test_seed: int = option(2015, "seed of the test pairs and their distortions", minimum=0,
                            maximum=SEED_MAX)
    st_pool: bool = option(False, "sample the transformers' output at full size and "
                                  "average-pool by 2, instead of sampling at half size")

    def resolve(self) -> None:
        pass


@TASKS.register("mnist-addition")
class MNISTAddition(DistortedDigits):
    """The sum (19 classes) of two RTS-distorted MNIST digits, one per channel (A.1)."""

    name = "mnist-addition"
    Config = AdditionConfig

    def __init__(self, cfg: AdditionConfig, *, data_dir=None, device="cpu", seed: int = 0):
        Task.__init__(self, cfg, data_dir=data_dir, device=device, seed=seed)
        self.data = AdditionMNIST("mnist", data_dir=data_dir, train_size=cfg.train_size,
                                  test_size=cfg.test_size, val_size=cfg.val_size, seed=seed,
                                  test_seed=cfg.test_seed, device=self.device)

    @classmethod
    def download(cls, cfg: AdditionConfig, data_dir=None) -> None:
        download("mnist", data_dir)

    def build_model(self) -> nn.Module:
        return build_addition_model(self.cfg.model, st_pool=self.cfg.st_pool)

    def summary(self):
        return {"model": self.cfg.model, "dataset": "mnist-addition"}

    def describe(self) -> str:
        return f"{self.cfg.model} on MNIST addition"
