"""MNIST addition (paper, appendix A.1): two RTS-distorted digits, one per channel; the
label is their sum."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .distortions import distort, to_device
from .mnist import DistortedMNIST, epoch_generator, shard_rows

__all__ = ["NUM_SUMS", "AdditionMNIST"]

#: Sums 0 to 18.
NUM_SUMS = 19


class AdditionMNIST(DistortedMNIST):
    """Pairs of digits, each under its own random RTS distortion, in a ``(2, 42, 42)`` image.

    An epoch pairs every training digit (first channel, in a shuffled order) with a digit
    drawn from a second, independent shuffle (second channel); both are distorted afresh
    from ``(seed, epoch)``. The test set pairs test digit ``i`` with test digit ``p[i]``
    for a permutation ``p`` drawn from ``test_seed``, distorted once in float64 and
    rounded to uint8, like the Table 1 test sets. Arguments as for
    :class:`~torchstn.experiments.data.mnist.DistortedMNIST` (the distortion is ``rts``).
    """

    def __init__(self, dataset: str = "mnist", *, data_dir=None, train_size: int | None = None,
                 test_size: int | None = None, val_size: int = 0, seed: int = 0,
                 test_seed: int = 2015, device: str | torch.device = "cpu"):
        super().__init__(dataset, "rts", data_dir=data_dir, train_size=train_size,
                         test_size=test_size, val_size=val_size, seed=seed,
                         test_seed=test_seed, device=device)

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches ``(x (B, 2, 42, 42) float32 in [0, 1], y (B,) sums)`` of one epoch."""
        gen = epoch_generator(self.seed, epoch)
        n = len(self.train_x)
        first, second = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
        device = self.train_x.device
        for start in range(0, n, batch_size):
            i = to_device(first[start : start + batch_size], device)
            j = to_device(second[start : start + batch_size], device)
            rows = None if world == 1 else shard_rows(len(i), rank, world)
            a, _ = distort(self.train_x[i], "rts", gen, rows=rows)
            b, _ = distort(self.train_x[j], "rts", gen, rows=rows)
            y = self.train_y[i] + self.train_y[j]
            yield torch.cat([a, b], dim=1), (y if rows is None else y[rows])

    def test_set(self, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed test pairs (validation pairs with ``val_size``): ``(x (N, 2, 42, 42)
        uint8, y (N,))``, computed once."""
        if self._test is None:
            gen = torch.Generator().manual_seed(self.test_seed)
            partner = torch.randperm(len(self.test_x), generator=gen)
            parts = []
            for start in range(0, len(self.test_x), chunk):
                rows = slice(start, start + chunk)
                a, _ = distort(self.test_x[rows], "rts", gen, dtype=torch.float64)
                b, _ = distort(self.test_x[partner[rows]], "rts", gen, dtype=torch.float64)
                parts.append(torch.cat([a, b], 1).mul(255).round().to(torch.uint8))
            self._test = torch.cat(parts), self.test_y + self.test_y[partner]
        return self._test
