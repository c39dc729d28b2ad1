"""Deployment: a model with spatial transformers to ONNX, checked in onnxruntime.

The standard call works: ``torch.onnx.export(model, (x,), "model.onnx", dynamo=True)``
(and the legacy TorchScript exporter, ``dynamo=False``). The fused warps are PyTorch
custom operators (``torch.ops.torchstn.numba_warp``, ``torch.ops.torchstn.triton_warp``)
that ONNX does not know; under ``torch.onnx.export`` (and TorchScript tracing)
:func:`torchstn.warp` takes the reference path instead, the operators' decomposition
(:mod:`torchstn.ops._reference`): the family's sampling grid in plain tensor operations
followed by ``grid_sample``, which the exporter writes as ONNX ``GridSample``. So the
ONNX model computes what ``backend="torch"`` computes; there is no second, hand-written
ONNX graph of the warp to keep in step.

:func:`export_onnx` adds what the plain call leaves to the user: the batch dimension of
every input left free, opset :data:`OPSET` (no version conversion on the way), a file
written whole or not at all, and no exporter chatter on the console.

Needs ``pip install 'torchstn[export]'`` (onnx, onnxscript; onnxruntime to run the
result).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from pathlib import Path

import torch

from .ops._reference import reference_warp

__all__ = ["OPSET", "export_onnx", "reference_decompositions"]

#: The ONNX opset :func:`export_onnx` writes: 18, the opset the exporter's translations
#: (onnxscript's torchlib, ``GridSample`` included) are written in, so the model needs no
#: version conversion (the exporter's default, 20, renames GridSample's modes on the way);
#: onnxruntime runs it from 1.14 on.
OPSET = 18


def _no_antialias(*args):
    raise NotImplementedError(
        "antialias=True does not export to ONNX yet: the number of samples per output "
        "pixel depends on the data, and ONNX has no anti-aliased GridSample (export with "
        "antialias=False; torch.export and torch.compile keep the fused operator)")


def reference_decompositions() -> dict:
    """A decomposition table (for :meth:`torch.export.ExportedProgram.run_decompositions`)
    that replaces every fused warp operator by the reference path, with PyTorch's default
    decompositions for everything else."""
    table = torch.export.default_decompositions()
    table[torch.ops.torchstn.numba_warp.default] = reference_warp
    table[torch.ops.torchstn.numba_warp_antialias.default] = _no_antialias
    if importlib.util.find_spec("triton") is not None:
        from .ops.triton.backend import register_ops

        register_ops()  # defined on the first Triton warp, else
        table[torch.ops.torchstn.triton_warp.default] = reference_warp
        table[torch.ops.torchstn.triton_warp_antialias.default] = _no_antialias
    return table


@contextlib.contextmanager
def _quiet(name: str):
    """Only errors from logger ``name`` and its children for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: torch.nn.Module, args: tuple, path: str | os.PathLike, *,
                dynamic_batch: bool = True, opset_version: int = OPSET) -> Path:
    """Write ``model`` as an ONNX file that onnxruntime runs.

    Args:
        model: any module, with spatial transformers of any 2-D family on any backend.
        args: example inputs (a tuple), as for :func:`torch.export.export`.
        path: the ``.onnx`` file; written whole or not at all.
        dynamic_batch: the first dimension of every input is left free (the model then
            runs at any batch size; the example batch must be at least 2).
        opset_version: the ONNX opset, default :data:`OPSET`.

    Returns:
        The path written.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple) or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError("args must be a tuple of example input tensors, got "
                        f"{type(args).__name__}")
    if dynamic_batch and any(a.dim() == 0 or a.shape[0] < 2 for a in args):
        raise ValueError("with dynamic_batch=True every example input needs a batch of at "
                         "least 2 (export takes a batch of 1 for a constant), got shapes "
                         f"{[tuple(a.shape) for a in args]}")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("export_onnx needs onnx and onnxscript: pip install "
                          "'torchstn[export]'") from e
    path = Path(path)
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} for _ in args)
    # The exporter prints its progress and the notes of libraries it probes (such as
    # "torchvision is not installed") to stdout, and warns of deprecations a user cannot
    # act on; errors still raise.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.export.export(model, args, dynamic_shapes=dynamic)
        program = program.run_decompositions(reference_decompositions())
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset_version,
                                         verbose=False)
    tmp = path.with_name(f".{path.name}.torchstn-tmp-{os.getpid()}")
    try:
        onnx_program.save(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
