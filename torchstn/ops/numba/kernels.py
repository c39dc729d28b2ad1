"""The compiled entry points the backend calls: each parallel kernel and its serial copy.

:mod:`torchstn.ops.numba.backend` imports this module on its first warp (``_load``): it
is what imports Numba. The kernels are defined in :mod:`~torchstn.ops.numba.forward`,
:mod:`~torchstn.ops.numba.backward` and :mod:`~torchstn.ops.numba.tiles` (see
:mod:`torchstn.ops.numba` for how they work); the backend reads them from here, with the
sizes it needs (``CHANNEL_GROUP``, ``_chunking``, ``tile_lanes``).
"""

from __future__ import annotations

import types

from numba import njit

from .backward import warp_backward
from .coords import CHANNEL_GROUP, _chunking
from .forward import warp_forward
from .lanes import tile_lanes
from .tiles import warp_backward_tiles, warp_forward_tiles

__all__ = ["CHANNEL_GROUP", "_chunking", "tile_lanes", "warp_backward", "warp_backward_serial",
           "warp_backward_tiles", "warp_backward_tiles_serial", "warp_forward",
           "warp_forward_serial", "warp_forward_tiles", "warp_forward_tiles_serial"]


def _renamed(fn, name):
    """A copy of ``fn`` under another name: Numba names its cache files after the function,
    and a serial and a parallel compilation of one function would overwrite each other."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    return copy


# The same kernels on the calling thread (prange runs as range), for small warps.
warp_forward_serial = njit(cache=True)(_renamed(warp_forward.py_func, "warp_forward_serial"))
warp_backward_serial = njit(cache=True)(_renamed(warp_backward.py_func, "warp_backward_serial"))
warp_forward_tiles_serial = njit(cache=True)(
    _renamed(warp_forward_tiles.py_func, "warp_forward_tiles_serial"))
warp_backward_tiles_serial = njit(cache=True)(
    _renamed(warp_backward_tiles.py_func, "warp_backward_tiles_serial"))
