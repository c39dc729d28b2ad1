"""The paper's experiments on top of the library: data, models, tasks, the training
engine, reports (reproduce, tables, figures) and the ``torchstn`` command line.

Layers, each importing only those before it: the library (:mod:`torchstn`) -> ``data``,
``models`` -> ``config`` -> ``tasks`` -> ``engine`` -> ``reports`` -> ``cli``. The library
never imports this package. Its extra dependencies come with
``pip install torchstn[experiments]``.
"""

from .config import OptimConfig, RunConfig, ScheduleConfig, TrainConfig, make_config
from .engine import evaluate, load_run, train
from .tasks import TASKS, Task

__all__ = ["TASKS", "OptimConfig", "RunConfig", "ScheduleConfig", "Task", "TrainConfig",
           "evaluate", "load_run", "make_config", "train"]
