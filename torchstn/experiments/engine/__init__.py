"""The task-agnostic training engine: loop, optimizer groups, schedules, checkpoints,
resume, metrics, progress and distributed training (torchrun + DDP)."""

from .checkpoint import atomic_write_text, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .distributed import World, is_primary_process, session
from .loop import (
                   CHECKPOINT,
                   count_parameters,
                   evaluate,
                   load_run,
                   native_bf16,
                   resolve_precision,
                   train,
)
from .optim import OPTIMIZERS, build_optimizer, parameter_groups
from .schedules import SCHEDULES, set_lr

__all__ = ["CHECKPOINT", "OPTIMIZERS", "SCHEDULES", "World", "atomic_write_text",
           "build_optimizer", "count_parameters", "evaluate", "is_primary_process",
           "load_checkpoint", "load_run", "native_bf16", "parameter_groups", "read_checkpoint_meta",
           "resolve_precision", "save_checkpoint", "session", "set_lr", "train"]
