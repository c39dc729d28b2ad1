"""3-D MNIST (paper, appendix A.3): classify a digit slab posed at random in a volume, from
a 2-D projection, with or without a 3-D transformer in front."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data.idx import download
from ..data.mnist3d import Mnist3D
from ..models import MNIST3D_MODELS
from ..options import SEED_MAX, option
from ..plots.figures import curves_figure, projection_figure
from .base import TASKS, Task
from .digits import DistortedDigits

__all__ = ["Mnist3DConfig", "Mnist3DTask"]


@dataclass
class Mnist3DConfig:
    """The ``[task]`` table of a 3-D MNIST run."""

    name: str = option("mnist3d", "the task (`torchstn tasks` lists them)")
    model: str = option("st3d-cnn", "st3d-cnn (an affine3d transformer, then the projection) "
                                    "or proj-cnn (the projection alone)",
                        choices=lambda: MNIST3D_MODELS.names())
    size: int = option(60, "side of the volume, in voxels", minimum=32)
    train_size: int | None = option(None, "first N training digits (default: all 60000)",
                                    minimum=1)
    test_size: int | None = option(2000, "first N test digits (each test volume is "
                                         "size**3 bytes)", minimum=1)
    val_size: int = option(0, "hold out this many training digits (fixed, seeded) and score "
                               "on them instead of the test set", minimum=0)
    test_seed: int = option(2015, "seed of the test poses", minimum=0, maximum=SEED_MAX)

    def resolve(self) -> None:
        pass


@TASKS.register("mnist3d")
class Mnist3DTask(DistortedDigits):
    """Digits as slabs posed at random in a volume; classified from a 2-D projection (A.3)."""

    name = "mnist3d"
    Config = Mnist3DConfig

    def __init__(self, cfg: Mnist3DConfig, *, data_dir=None, device="cpu", seed: int = 0):
        Task.__init__(self, cfg, data_dir=data_dir, device=device, seed=seed)
        self.data = Mnist3D("mnist", size=cfg.size, data_dir=data_dir,
                            train_size=cfg.train_size, test_size=cfg.test_size,
                            val_size=cfg.val_size, seed=seed, test_seed=cfg.test_seed,
                            device=self.device)

    @classmethod
    def download(cls, cfg: Mnist3DConfig, data_dir=None) -> None:
        download("mnist", data_dir)

    def build_model(self) -> nn.Module:
        return MNIST3D_MODELS.get(self.cfg.model)(self.cfg.size)

    def summary(self) -> dict[str, Any]:
        return {"model": self.cfg.model, "dataset": "mnist3d"}

    def describe(self) -> str:
        return f"{self.cfg.model} on 3-D MNIST"

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        paths = [projection_figure(model, self.test_images(10), Path(out) / "projections.png",
                                   title=self.describe())]
        if history:
            paths.append(curves_figure(history, Path(out) / "curves.png",
                                       title=self.describe()))
        return paths
