"""Tasks: what the engine trains. A task owns its data, batches, models, loss, metrics,
evaluation and figures; the engine (:mod:`torchstn.experiments.engine`) owns the loop.

A task is a :class:`Task` subclass registered in :data:`TASKS` under its ``name``, with a
``Config`` dataclass (the ``[task]`` table of a run's config; its fields become flags of
``torchstn train --task NAME``).
"""

from __future__ import annotations

from . import addition, colocalization, digits, house_numbers, images, mnist3d, needle  # noqa: F401,E501  (registers the tasks)
from .base import DEFAULT_TASK, TASKS, Sums, Task, build_task  # noqa: F401  (Sums: for task authors)

__all__ = ["DEFAULT_TASK", "TASKS", "Task", "build_task"]
