"""Moved to :mod:`torchstn.experiments.checkpoint` (the layering: tasks load checkpoints);
this path keeps working."""

from ..checkpoint import *  # noqa: F403
from ..checkpoint import __all__  # noqa: F401
