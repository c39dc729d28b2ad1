"""The compiled entry points the backend calls: each parallel kernel and its serial copy.

:mod:`torchstn.ops.numba.backend` imports this module on its first warp (``_load``): it
is what imports Numba. The kernels are defined in :mod:`~torchstn.ops.numba.forward`,
:mod:`~torchstn.ops.numba.backward`, :mod:`~torchstn.ops.numba.tiles` and
:mod:`~torchstn.ops.numba.antialias` (see
:mod:`torchstn.ops.numba` for how they work); the backend reads them from here, with the
sizes it needs (``CHANNEL_GROUP``, ``_chunking``, ``tile_lanes``).

Each kernel is a loop over its tasks (``prange`` in the parallel kernel, ``range`` in the
serial copy for small warps) around one compiled task body (``_forward_task`` and so on):
the body, nearly all of the compile time, compiles once per dtype, not once per copy.
"""

from __future__ import annotations

from .antialias import (
    warp_antialias_backward,
    warp_antialias_backward_serial,
    warp_antialias_forward,
    warp_antialias_forward_serial,
)
from .backward import warp_backward, warp_backward_serial
from .coords import CHANNEL_GROUP, _chunking
from .forward import warp_forward, warp_forward_serial
from .lanes import tile_lanes
from .tiles import (
    warp_backward_tiles,
    warp_backward_tiles_serial,
    warp_forward_tiles,
    warp_forward_tiles_serial,
)

__all__ = ["CHANNEL_GROUP", "_chunking", "tile_lanes", "warp_antialias_backward",
           "warp_antialias_backward_serial", "warp_antialias_forward",
           "warp_antialias_forward_serial", "warp_backward", "warp_backward_serial",
           "warp_backward_tiles", "warp_backward_tiles_serial", "warp_forward",
           "warp_forward_serial", "warp_forward_tiles", "warp_forward_tiles_serial"]
