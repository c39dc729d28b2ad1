"""Moved to :mod:`torchstn.experiments.plots.viz` (the layering: tasks draw their figures);
this path keeps working."""

from ..plots.viz import *  # noqa: F403
from ..plots.viz import __all__  # noqa: F401
