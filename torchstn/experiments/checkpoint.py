"""Checkpoints: safetensors weights and optimizer state plus JSON metadata, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._files import atomic_write

__all__ = ["atomic_write_text", "has_optimizer_state", "load_checkpoint", "read_checkpoint_meta",
           "save_checkpoint", "strip_optimizer"]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half-written."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
    return out


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, meta: dict[str, Any]) -> None:
    """Save weights (``model.*``), optimizer tensors (``optim.*``) and JSON ``meta``."""
    # On the CPU whatever device trained them, so a checkpoint loads anywhere.
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    if optimizer is not None:
        tensors.update(_optimizer_tensors(optimizer))
    metadata = {"torchstn": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("torchstn")
    except SafetensorError as e:
        raise _damaged(path, e) from None
    if meta is None:
        raise ValueError(f"{path}: not a torchstn checkpoint (no 'torchstn' metadata)")
    try:
        meta = json.loads(meta)
    except json.JSONDecodeError as e:
        raise _damaged(path, f"its metadata is not JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise _damaged(path, "its metadata holds no run configuration")
    return meta


def _damaged(path: Path, why) -> ValueError:
    """The one-line error of a checkpoint that cannot be read."""
    why = str(why).removeprefix("Error while deserializing header: ")
    return ValueError(f"{path}: damaged or truncated checkpoint ({why}); train the run "
                      "again or restore the file")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise _damaged(path, e) from None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into ``model`` (and ``optimizer``); return meta."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    tensors = _tensors(path)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"{path}: its weights do not fit the model of its configuration "
                         f"({' '.join(line.strip() for line in first[:2])})") from None
    if optimizer is not None:
        sd = optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        sd["state"] = state
        optimizer.load_state_dict(sd)
    return meta


def has_optimizer_state(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at ``path`` holds optimizer tensors (what a resume needs)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return any(key.startswith("optim.") for key in f.keys())
    except SafetensorError as e:
        raise _damaged(Path(path), e) from None


def strip_optimizer(path: str | os.PathLike) -> int:
    """Rewrite the checkpoint at ``path`` with its weights and metadata only (a finished run
    needs no optimizer state: Adam's two moments are twice the model's size). Returns the
    bytes saved; 0 if there was nothing to strip."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    if not has_optimizer_state(path):
        return 0
    before = path.stat().st_size
    tensors = {k: v for k, v in _tensors(path).items() if k.startswith("model.")}
    metadata = {"torchstn": json.dumps({**meta, "weights_only": True})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return before - path.stat().st_size
