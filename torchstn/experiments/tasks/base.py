"""The interface between a task and the engine (:class:`Task`) and the registry of
tasks (:data:`TASKS`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from torchstn._registry import Registry

__all__ = ["DEFAULT_TASK", "TASKS", "Task", "build_task", "classification_means",
           "classification_step", "classification_sums"]

Sums = dict[str, Any]


class Task:
    """The interface between a task and the engine.

    Metrics are sums (``{"loss": ..., "errors": ..., "count": ...}``, numbers or 0-d
    tensors) so the engine can add them over batches and over ranks before the task turns
    them into means (:meth:`train_metrics`, :meth:`eval_metrics`). ``count`` is the number
    of examples, a plain int.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, cfg: Any, *, data_dir=None, device: str | torch.device = "cpu",
                 seed: int = 0):
        self.cfg = cfg
        self.data_dir = data_dir
        self.device = torch.device(device)
        self.seed = seed  # of the training data

    @classmethod
    def download(cls, cfg: Any, data_dir=None) -> None:
        """Fetch the task's missing data files (``--download``)."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def init_model(self, model: nn.Module) -> None:
        """Prepare a freshly built model before a new run trains it (load pretrained
        parts); not called when a run resumes or is loaded from its checkpoint."""

    def after_epoch(self, out: Path, model: nn.Module, history: list[dict]) -> None:
        """Called on the primary process after each epoch's checkpoint, with the run
        folder (for what a task records over training besides its metrics)."""

    def num_train_examples(self) -> int:
        raise NotImplementedError

    def batch_examples(self, step: int, batch_size: int) -> int:
        """Examples in global batch ``step`` (from 0) of an epoch, all ranks together.

        The engine weights a rank's shard by its share of them. The default fits batches
        of ``batch_size`` taken in order, the last one shorter; a task that batches
        otherwise (dropping the last batch, ...) says so here.
        """
        return min(batch_size, self.num_train_examples() - step * batch_size)

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[Any]:
        """This rank's shard of every batch of ``epoch``, on the task's device."""
        raise NotImplementedError

    def train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Sums]:
        """The mean loss of ``batch`` (to backpropagate) and its metric sums."""
        raise NotImplementedError

    def train_metrics(self, sums: Sums) -> dict[str, float]:
        """Epoch metrics (``train_loss``, ...) from the summed :meth:`train_step` sums."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, *, rank: int = 0, world: int = 1) -> Sums:
        """Metric sums over this rank's shard of the test set."""
        raise NotImplementedError

    def eval_metrics(self, sums: Sums) -> dict[str, float]:
        """Test metrics from the summed :meth:`evaluate` sums; ``test_error`` among them."""
        raise NotImplementedError

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of the task's model, as its test set gives them (for tracing and export:
        ``torchstn export``)."""
        raise NotImplementedError(f"task {self.name!r} does not say what its model takes, "
                                  "so its runs cannot be exported")

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records of the task besides its metrics."""
        return {}

    def describe(self) -> str:
        """A short label of the run (``st-cnn-affine on mnist RTS``)."""
        return self.name

    def figures(self, out: Path, model: nn.Module, history: list[dict]) -> list[Path]:
        """Write the run's figures into ``out``; return their paths."""
        return []


def classification_step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, Sums]:
    """:meth:`Task.train_step` of a classification task: batch ``(x, y)``, cross-entropy.

    An empty shard (a last batch smaller than the world) still takes part in the backward
    pass, with a zero loss (cross-entropy's mean of nothing is NaN).
    """
    x, y = batch
    logits = model(x)
    loss = F.cross_entropy(logits, y) if len(y) else logits.sum() * 0.0
    return loss, {"loss": loss.detach().double() * len(y),
                  "errors": (logits.argmax(1) != y).sum(), "count": len(y)}


@torch.no_grad()
def classification_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        device: torch.device, chunk: int) -> Sums:
    """Summed cross-entropy and errors of ``model`` on uint8 images ``x`` (scaled to [0, 1])
    with labels ``y``, ``chunk`` images at a time, in eval mode."""
    model.eval()
    loss, wrong = 0.0, 0
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk].to(device).float() / 255
        yb = y[start : start + chunk].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        wrong += (logits.argmax(1) != yb).sum().item()
    return {"loss": loss, "errors": wrong, "count": len(x)}


def classification_means(split: str, sums: Sums) -> dict[str, float]:
    """``{split}_loss`` (mean cross-entropy) and ``{split}_error`` (%) from summed metrics
    (an empty split reads as 0, not a division by zero)."""
    count = max(1, sums["count"])
    return {f"{split}_loss": sums["loss"] / count,
            f"{split}_error": 100.0 * sums["errors"] / count}


#: Tasks by name.
TASKS: Registry[type[Task]] = Registry("task")
DEFAULT_TASK = "distorted-digits"


def build_task(cfg: Any, *, data_dir=None, device="cpu", seed: int = 0) -> Task:
    """The task named by ``cfg.name``, built for its config (``seed``: the training
    data's)."""
    return TASKS.get(cfg.name)(cfg, data_dir=data_dir, device=device, seed=seed)
