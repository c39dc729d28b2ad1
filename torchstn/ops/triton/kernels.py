"""The kernels the backend launches, and their launch block.

:mod:`torchstn.ops.triton.backend` imports this module on its first warp (``_load``): it
is what imports Triton. The kernels are defined in :mod:`~torchstn.ops.triton.forward`,
:mod:`~torchstn.ops.triton.backward` and :mod:`~torchstn.ops.triton.antialias`
(anti-aliased); see :mod:`torchstn.ops.triton` for how they work.
"""

from __future__ import annotations

from .antialias import warp_aa_bwd_kernel, warp_aa_fwd_kernel
from .backward import fixed_to_float_kernel, warp_bwd_kernel
from .forward import warp_fwd_kernel

__all__ = ["BLOCK", "fixed_to_float_kernel", "warp_aa_bwd_kernel", "warp_aa_fwd_kernel",
           "warp_bwd_kernel", "warp_fwd_kernel"]

#: Output pixels per program of the forward and backward kernels.
BLOCK = 256
