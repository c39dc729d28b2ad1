"""The task-agnostic training engine: the loop, resume, metrics, progress and distributed
training (torchrun + DDP). The optimizer groups, schedules and checkpoints it uses live
one layer down (:mod:`torchstn.experiments.optim`, ``.schedules``, ``.checkpoint``) and
are re-exported here."""

from ..checkpoint import atomic_write_text, load_checkpoint, read_checkpoint_meta, save_checkpoint
from ..optim import OPTIMIZERS, build_optimizer, parameter_groups
from ..schedules import SCHEDULES, set_lr
from .distributed import World, is_primary_process, session
from .loop import (
    CHECKPOINT,
    check_resumable,
    count_parameters,
    evaluate,
    load_run,
    native_bf16,
    resolve_precision,
    train,
)

__all__ = ["CHECKPOINT", "OPTIMIZERS", "SCHEDULES", "World", "atomic_write_text",
           "build_optimizer", "check_resumable", "count_parameters", "evaluate",
           "is_primary_process", "load_checkpoint", "load_run", "native_bf16",
           "parameter_groups", "read_checkpoint_meta", "resolve_precision", "save_checkpoint",
           "session", "set_lr", "train"]
