"""The paper's experiments on top of the library: data, models, tasks, the training
engine, reports (reproduce, tables, figures) and the ``torchstn`` command line.

Layers, bottom to top, each importing only its own and those below it (at the top of a
file or inside a function alike; ``tests/experiments/test_layers.py`` checks it, with no import
circle and no private name used outside its file):

1. the small shared pieces: ``options`` (the config field helper, ``SEED_MAX``),
   ``optim`` and ``schedules`` (their registries), ``checkpoint``, ``_files``;
2. ``data``, ``models`` and ``plots`` (the figures of runs);
3. ``tasks`` (``tasks.base``: the :class:`Task` interface and the :data:`TASKS` registry;
   then each task);
4. ``config`` (a run's configuration, reading the tasks' config classes);
5. ``engine`` (the loop: it knows the Task interface, no task);
6. ``reports`` (``reproduce``, the tables, the demo);
7. ``cli``.

The library (:mod:`torchstn`) never imports this package. Its extra dependencies come
with ``pip install torchstn[experiments]``.
"""

from .config import OptimConfig, RunConfig, ScheduleConfig, TrainConfig, make_config
from .engine import evaluate, load_run, train
from .tasks import TASKS, Task

__all__ = ["TASKS", "OptimConfig", "RunConfig", "ScheduleConfig", "Task", "TrainConfig",
           "evaluate", "load_run", "make_config", "train"]
