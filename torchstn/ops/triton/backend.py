"""The fused GPU backend: matrix families warped by Triton kernels, deterministic backward.

See :mod:`torchstn.ops.triton` for the kernels and the determinism method. On the
CPU the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``), for testing.

Layers: :class:`TritonBackend` (what it supports) calls the ``triton_op`` operator
``torchstn::triton_warp`` (:mod:`.ops`; its autograd formula calls
``torchstn::triton_warp_backward``), which calls the entry points :func:`fused_forward`
and :func:`fused_backward` (:mod:`.launch`): plain functions of tensors that launch the
kernels. Nothing here imports Triton: the kernels load on first use, the operators on
the first warp (:func:`register_ops`).
"""

from __future__ import annotations

import torch

from ...warping import FusedMatrixBackend, WarpCall
from .launch import fused_backward, fused_forward, interpreting

__all__ = ["TritonBackend", "fused_backward", "fused_forward", "interpreting",
           "register_ops"]

def register_ops() -> None:
    """Define the operators ``torch.ops.torchstn.triton_warp`` and
    ``triton_warp_backward`` (:mod:`torchstn.ops.triton.ops`), once.

    Done on the first Triton warp, not on ``import torchstn``: ``torch.library.triton_op``
    imports Triton. Call it before loading an exported program that holds them.
    """
    from . import ops  # noqa: F401


class TritonBackend(FusedMatrixBackend):
    """Fused GPU kernels for 2-D matrix families (bilinear/nearest, zeros/border padding)."""

    name = "triton"
    package = "triton"
    dtypes = (torch.float32, torch.float16, torch.bfloat16)

    def device_unsupported(self, x: torch.Tensor) -> str | None:
        if x.device.type != "cuda" and not (x.device.type == "cpu" and interpreting()):
            return (f"it runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), got a "
                    f"tensor on {x.device}")
        if interpreting() and (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            return ("Triton's interpreter (TRITON_INTERPRET=1) runs kernels eagerly only, not "
                    "inside torch.compile or torch.export")
        return None

    def __call__(self, call: WarpCall) -> torch.Tensor:
        register_ops()
        op = torch.ops.torchstn.triton_warp_antialias if call.antialias else (
            torch.ops.torchstn.triton_warp)
        return op(call.input, self._matrices(call), *self._options(call))

    def antialias_unsupported(self, call: WarpCall) -> str | None:
        if call.mode != "bilinear":
            return f"antialias with mode {call.mode!r} runs on backend 'torch'"
        return None

    def automatic(self, call: WarpCall) -> bool:
        # Never chosen by backend="auto" (not even on CUDA) until scripts/gpu-check.sh has
        # passed on a GPU and shown the kernels faster than PyTorch's; opt in with
        # backend="triton".
        return False
