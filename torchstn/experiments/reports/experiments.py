"""The one table of ``torchstn reproduce``'s experiments: name -> task, recipe, runner.

The command line builds a subcommand per entry (its flags: the task's config fields less
those the grid sets per cell, plus the grid's own selections) and calls the entry's
runner; nothing else lists the experiments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import augmentation as aug
from . import house_numbers as hn
from . import reproduce as rep

__all__ = ["CELL_FIELDS", "EXPERIMENT_TABLE", "Experiment", "Selection"]

#: Set per cell by every grid, so never flags of ``reproduce`` (and its tables are test
#: errors: no validation split).
CELL_FIELDS = frozenset({"distortion", "model", "seed", "st_downsample", "task", "val_size"})


@dataclass(frozen=True)
class Selection:
    """A flag choosing part of a grid (``--models``, ``--sizes``, ...): the runner's
    keyword ``name``, the flag's ``help`` and its ``type``."""

    name: str
    help: str
    type: Callable[[str], Any] = str


@dataclass(frozen=True)
class Experiment:
    """One ``torchstn reproduce`` experiment."""

    name: str
    #: The task its runs train.
    task: str
    #: One line for ``--help``.
    help: str
    #: The flat recipe settings (read when called: registries fill up on import).
    recipe: Callable[[], dict]
    #: ``runner(out, *, seeds, base, data_dir, progress, **selections) -> table``.
    runner: Callable[..., str]
    selections: tuple[Selection, ...] = ()
    #: Config fields the grid sets per cell (not flags).
    cell_fields: frozenset[str] = field(default=CELL_FIELDS)


def _late(module, function: str, *first):
    """``module.function(*first, ...)``, looked up when called (so a replaced function,
    in a test or a user's script, is the one that runs)."""
    def runner(*args, **kwargs):
        return getattr(module, function)(*first, *args, **kwargs)
    return runner


def _models(default: str) -> Selection:
    return Selection("models", f"default: {default}")


_SIZES = Selection("sizes", "among 64 (tight) and 128 (loose) (default: both)", int)
_HOUSE_FIELDS = CELL_FIELDS | {"variant", "size", "st_size"}

#: Every experiment of ``torchstn reproduce``, in the order ``--help`` lists them.
EXPERIMENT_TABLE: dict[str, Experiment] = {e.name: e for e in (
    Experiment("table1", "distorted-digits", "Table 1: distorted MNIST (R, RTS, P, E, TC)",
               lambda: dict(rep.TABLE1_RECIPE), _late(rep, "run_table1"), (
                   Selection("distortions", "among r rts p e tc (default: all; on tc only "
                                            "the cells the paper reports)"),
                   _models("the 8 Table 1 rows"))),
    Experiment("addition", "mnist-addition", "MNIST addition (appendix A.1)",
               partial(rep.experiment_recipe, "addition"), _late(rep, "run_rows", "addition"),
               (_models("FCN, CNN, ST-FCN and 2xST-FCN of each family"),)),
    Experiment("mnist3d", "mnist3d",
               "3-D MNIST (appendix A.3): with and without a 3-D transformer",
               partial(rep.experiment_recipe, "mnist3d"), _late(rep, "run_rows", "mnist3d"),
               (_models("proj-cnn and st3d-cnn"),)),
    Experiment("colocalization", "colocalization",
               "co-localisation (appendix A.2): digits 0-9 on T and TC, without labels",
               lambda: dict(rep.COLOC_RECIPE), _late(rep, "run_colocalization"), (
                   Selection("variants", "among t and tc (default: both)"),
                   Selection("digits", "digit classes (default: 0 to 9)", int)),
               frozenset({"task", "seed", "digit", "clutter"})),
    Experiment("house-numbers", "house-numbers",
               "Table 2 on synthetic house numbers from MNIST, at a width for 2 CPU cores",
               lambda: dict(hn.HOUSE_EXPERIMENTS["house-numbers"]["recipe"]),
               _late(hn, "run_house_numbers", "house-numbers"),
               (_SIZES, _models("cnn st-cnn-single st-cnn-multi")), _HOUSE_FIELDS),
    Experiment("svhn", "svhn",
               "Table 2: SVHN house numbers (format 1 files under <data-dir>/svhn/)",
               lambda: dict(hn.HOUSE_EXPERIMENTS["svhn"]["recipe"]),
               _late(hn, "run_house_numbers", "svhn"),
               (_SIZES, _models("cnn st-cnn-single st-cnn-multi")), _HOUSE_FIELDS),
    Experiment("augmentation", "distorted-digits",
               "can a transformer replace augmentation? CNN and ST-CNN on R and RTS under "
               "training protocols (fixed, fresh, less data, narrow, upright)",
               lambda: dict(rep.TABLE1_RECIPE), _late(aug, "run_augmentation"), (
                   Selection("distortions", "among r and rts (default: both)"),
                   Selection("protocols", "among fresh fixed fresh-6k fixed-6k narrow "
                                          "upright (default: all)"),
                   _models("cnn st-cnn-affine")),
               CELL_FIELDS | {"fixed_distortions", "train_distortion"}),
)}
