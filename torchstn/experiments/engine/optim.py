"""Moved to :mod:`torchstn.experiments.optim` (the layering: the config reads its
registry); this path keeps working."""

from ..optim import *  # noqa: F403
from ..optim import __all__  # noqa: F401
