"""Deployment: a model with spatial transformers to ONNX, checked in onnxruntime.

The fused warps are PyTorch custom operators (``torch.ops.torchstn.numba_warp``,
``torch.ops.torchstn.triton_warp``). ONNX knows neither, so :func:`export_onnx` exports
the model with :func:`torch.export.export` and then replaces each fused warp by its
reference decomposition (:func:`reference_decompositions`): the family's sampling grid in
plain tensor operations followed by ``grid_sample``, which the ONNX exporter writes as
ONNX ``GridSample``. The decomposition is the reference path every fused kernel is tested
against, so the ONNX model computes what ``backend="torch"`` computes; there is no
second, hand-written ONNX graph of the warp to keep in step.

Needs ``pip install 'torchstn[export]'`` (onnx, onnxscript; onnxruntime to run the
result).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .grids import _affine_grid, _projective_grid, compute_dtype
from .warping import _nan_where

__all__ = ["OPSET", "export_onnx", "reference_decompositions"]

#: The ONNX opset :func:`export_onnx` writes: 18, the opset the exporter's translations
#: (onnxscript's torchlib, ``GridSample`` included) are written in, so the model needs no
#: version conversion (the exporter's default, 20, renames GridSample's modes on the way);
#: onnxruntime runs it from 1.14 on.
OPSET = 18


def _reference_warp(input, matrix, out_h, out_w, nearest, border, align_corners,
                    projective):
    """The warp of ``input`` by (N, 3, 3) ``matrix`` on the reference path."""
    finite = torch.isfinite(matrix).flatten(1).all(1)
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    m = torch.where(finite.view(-1, 1, 1), matrix, eye)
    work = compute_dtype(m.dtype)
    m = m.to(work)
    if projective:
        grid = _projective_grid(m, (out_h, out_w), align_corners)
    else:
        grid = _affine_grid(m[:, :2], (out_h, out_w), align_corners)
    out = F.grid_sample(input.to(work), grid, mode="nearest" if nearest else "bilinear",
                        padding_mode="border" if border else "zeros",
                        align_corners=align_corners)
    return _nan_where(out.to(input.dtype), finite)


def _numba_reference(input, theta, out_h, out_w, nearest, border, align_corners, projective):
    n, e = theta.shape
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device).reshape(1, 9)
    matrix = torch.cat([theta, eye[:, e:].expand(n, 9 - e)], dim=1).view(n, 3, 3)
    return _reference_warp(input, matrix, out_h, out_w, nearest, border, align_corners,
                           projective)


def reference_decompositions() -> dict:
    """A decomposition table (for :meth:`torch.export.ExportedProgram.run_decompositions`)
    that replaces every fused warp operator by the reference path, with PyTorch's default
    decompositions for everything else."""
    table = torch.export.default_decompositions()
    table[torch.ops.torchstn.numba_warp.default] = _numba_reference
    if importlib.util.find_spec("triton") is not None:
        from .ops.triton.backend import register_ops

        register_ops()  # defined on the first Triton warp, else
        table[torch.ops.torchstn.triton_warp.default] = _reference_warp
    return table


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
    with torch.no_grad():
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
