"""Distorted MNIST / Fashion-MNIST: a fixed test set and freshly distorted training batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .distortions import DISTORTIONS, check_train_distortion, distort, output_size, to_device
from .idx import load_idx_dataset

__all__ = ["VAL_SEED", "DistortedMNIST", "check_size", "epoch_generator", "shard_rows",
           "validation_split"]


def shard_rows(n: int, rank: int, world: int) -> slice:
    """Rows of shard ``rank`` of ``world`` contiguous, near-equal shards of ``n`` rows.

    >>> [shard_rows(10, r, 3) for r in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    return slice(rank * n // world, (rank + 1) * n // world)


def check_size(name: str, value: int | None, available: int, what: str) -> None:
    if value is not None and value > available:
        raise ValueError(f"{name} must be at most {available} ({what}), got {value}")


#: Seed of the permutation that picks the validation digits: fixed, so that every run with
#: the same ``val_size`` holds out the same digits, whatever its own seed.
VAL_SEED = 1506


def validation_split(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows) of ``n`` training digits: ``val_size`` of them,
    drawn once from :data:`VAL_SEED`, held out; each part in increasing order.

    >>> train, val = validation_split(10, 3)
    >>> len(train), len(val), sorted(set(train.tolist()) | set(val.tolist())) == list(range(10))
    (7, 3, True)
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    return order[: n - val_size].sort().values, order[n - val_size :].sort().values


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One independent stream per (seed, epoch): a resumed run redraws exactly the data
    # the uninterrupted run would have drawn.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class DistortedMNIST:
    """A distorted MNIST-style benchmark.

    Training images are distorted afresh every epoch (from ``seed`` and the epoch
    number); the test set is distorted once from ``test_seed`` and rounded to uint8, so
    the same seed gives the same bytes on every machine.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        distortion: see :mod:`torchstn.data.distortions`.
        data_dir: data root (see :func:`torchstn.data.resolve_data_dir`).
        train_size: use the first ``train_size`` training digits (default: all 60000;
            with ``val_size``, of those left for training).
        test_size: use the first ``test_size`` test digits (default: all 10000).
        val_size: hold out this many training digits (:func:`validation_split`) as the
            validation set; :meth:`test_set` then returns them, distorted once from
            ``test_seed`` like the test set, and the test digits are never read.
        seed: training-data seed.
        test_seed: test-set seed (fixed by default, so every run scores the same images).
        device: where training batches are made (the digits live there; only the drawn
            parameters, a few numbers per image, come from the CPU generator). The test
            set is always made on the CPU in float64, so its bytes never depend on the
            device.
        train_distortion: the training digits' distortion (default: ``distortion``, the
            test set's); one of the same image size.
        fixed_distortions: draw each training digit's distortion once (from ``seed``) and
            keep it every epoch, as a fixed dataset does, instead of afresh every epoch
            (augmentation). The epochs still shuffle.
    """

    def __init__(self, dataset: str = "mnist", distortion: str = "rts", *, data_dir=None,
                 train_size: int | None = None, test_size: int | None = None,
                 val_size: int = 0, seed: int = 0, test_seed: int = 2015,
                 device: str | torch.device = "cpu", train_distortion: str | None = None,
                 fixed_distortions: bool = False):
        self.distortion = distortion
        check_train_distortion("train_distortion", train_distortion, distortion)
        self.train_distortion = train_distortion or distortion
        self.fixed_distortions = fixed_distortions
        self._fixed: dict[str, torch.Tensor] | None = None
        self._test_parameters: dict[str, torch.Tensor] = {}
        self.val_size = val_size
        self.size = output_size(distortion)
        self.seed, self.test_seed = seed, test_seed
        self.dataset, self.data_dir, self.train_size = dataset, data_dir, train_size
        self.device = torch.device(device)
        if val_size:
            train_x, train_y = load_idx_dataset(dataset, "train", data_dir)
            if not 0 < val_size < len(train_x):
                raise ValueError(f"val_size must be between 1 and {len(train_x) - 1} (the "
                                 f"training digits of {dataset}), got {val_size}")
            rows, val_rows = validation_split(len(train_x), val_size)
            test_x, test_y = train_x[val_rows], train_y[val_rows]
            # Read once: the rest are the training digits.
            self._train_digits = (train_x[rows], train_y[rows])
        else:
            self._train_digits = None  # read on first use
            test_x, test_y = load_idx_dataset(dataset, "test", data_dir)
        what = "the validation digits" if val_size else f"the test digits of {dataset}"
        check_size("test_size", test_size, len(test_x), what)
        self.test_x, self.test_y = test_x[:test_size], test_y[:test_size]
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._train: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _train_split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training digits, labels and clutter pool, read on first use (scoring a
        run needs only the test files)."""
        if self._train is None:
            train_x, train_y = self._train_digits or load_idx_dataset(
                self.dataset, "train", self.data_dir)
            check_size("train_size", self.train_size, len(train_x),
                        f"the training digits of {self.dataset}")
            pool = train_x.to(self.device)  # tc clutter comes from the whole training split
            self._train = (pool[:self.train_size],
                           train_y[:self.train_size].to(self.device), pool)
        return self._train

    @property
    def train_x(self) -> torch.Tensor:
        return self._train_split()[0]

    @property
    def train_y(self) -> torch.Tensor:
        return self._train_split()[1]

    @property
    def clutter_pool(self) -> torch.Tensor:
        return self._train_split()[2]

    def train_batches(self, epoch: int, batch_size: int, *, rank: int = 0,
                      world: int = 1) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled, freshly distorted ``(x (B, 1, S, S) float32, y (B,))`` batches of one epoch.

        With ``world > 1`` each batch of ``batch_size`` is cut into ``world`` contiguous
        shards and only shard ``rank`` is made: the ranks together see exactly the batches
        of a single process.
        """
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.train_x), generator=gen)
        fixed = self.fixed_parameters() if self.fixed_distortions else None
        for start in range(0, len(order), batch_size):
            cut = order[start : start + batch_size]
            idx = to_device(cut, self.train_x.device)
            rows = None if world == 1 else shard_rows(len(idx), rank, world)
            drawn = None if fixed is None else {k: v[cut] for k, v in fixed.items()}
            x, _ = distort(self.train_x[idx], self.train_distortion, gen,
                           pool=self.clutter_pool, rows=rows, drawn=drawn)
            y = self.train_y[idx]
            yield x, (y if rows is None else y[rows])

    def fixed_parameters(self) -> dict[str, torch.Tensor]:
        """The distortion parameters of every training digit, drawn once from ``seed``
        (a stream of its own: ``epoch_generator(seed, -1)``; the epochs count from 0)."""
        if self._fixed is None:
            spec = DISTORTIONS.get(self.train_distortion)
            self._fixed = spec.draw(len(self.train_x), epoch_generator(self.seed, -1),
                                    len(self.clutter_pool))
        return self._fixed

    def test_set(self, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed test set (the validation set with ``val_size``): ``(x (N, 1, S, S)
        uint8, y (N,))``, computed once."""
        if self._test is None:
            gen = torch.Generator().manual_seed(self.test_seed)
            pool = self.test_x
            parts, drawn = [], []
            for start in range(0, len(self.test_x), chunk):
                x, info = distort(self.test_x[start : start + chunk], self.distortion, gen,
                                  pool=pool, dtype=torch.float64)
                parts.append(x.mul(255).round().to(torch.uint8))
                drawn.append(info)
            self._test = torch.cat(parts), self.test_y
            self._test_parameters = {k: torch.cat([d[k] for d in drawn])
                                     for k in (drawn[0] if drawn else {})}
        return self._test

    def test_parameters(self) -> dict[str, torch.Tensor]:
        """The distortion parameters of every test (or validation) image, as
        :func:`~torchstn.experiments.data.distortions.distort` drew them for
        :meth:`test_set` (``angle`` in radians, ``scale``, ...): what a transformer that
        undoes the distortion has to find."""
        self.test_set()
        return self._test_parameters
