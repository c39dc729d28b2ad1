"""Moved to :mod:`torchstn.experiments.schedules` (the layering: the config reads its
registry); this path keeps working."""

from ..schedules import *  # noqa: F403
from ..schedules import __all__  # noqa: F401
