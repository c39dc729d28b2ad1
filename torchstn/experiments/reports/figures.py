"""Moved to :mod:`torchstn.experiments.plots.figures` (the layering: tasks draw their
figures); this path keeps working."""

from ..plots.figures import *  # noqa: F403
from ..plots.figures import __all__  # noqa: F401
