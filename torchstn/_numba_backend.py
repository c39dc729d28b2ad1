"""The fused CPU backend: matrix families warped by Numba kernels, forward and backward.

The grid generator and the sampler run as one kernel that computes each sample
coordinate from the 3x3 matrix on the fly (see :mod:`torchstn._numba_kernels`); the
backward pass reduces the coordinate gradient to the matrix inside the kernel. Where the
parameters are the matrix entries (``affine``, ``projective``) the kernels take them
directly; otherwise autograd carries the matrix gradient to the family's parameters.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import numpy as np
import torch

from .warping import FusedMatrixBackend, WarpCall

__all__ = ["NumbaBackend", "compile_seconds"]

_kernels = None
#: Seconds spent compiling (or loading from Numba's cache) each kernel, by name.
compile_seconds: dict[str, float] = {}


def _load():
    global _kernels
    if _kernels is None:
        from . import _numba_kernels

        _kernels = _numba_kernels
    return _kernels


#: Below this many output values a warp runs on the calling thread: waking the thread
#: pool costs more than it saves (and far more when the machine is busy).
SERIAL_BELOW = 1 << 15
# Numba's OpenMP and workqueue thread pools do not survive fork(): a DataLoader worker
# forked from a process that has warped in parallel would abort. Forked children
# (another pid than the one that imported torchstn) therefore run the serial kernels.
_IMPORT_PID = os.getpid()


def _serial(outputs: int) -> bool:
    return outputs < SERIAL_BELOW or os.getpid() != _IMPORT_PID


def _timed(name: str, fn, *args) -> None:
    """Run a kernel, recording the first call (the compile) separately."""
    if name in compile_seconds:
        fn(*args)
        return
    start = time.perf_counter()
    fn(*args)
    compile_seconds[name] = time.perf_counter() - start


def _set_threads() -> int:
    """Follow torch's thread count (capped by Numba's pool); return it."""
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


#: Tensors from this size on are backed by transparent huge pages where Linux offers them:
#: NumPy's threshold for the same advice on its own arrays.
HUGE_PAGES_FROM = 4 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_libc_calls = None  # (madvise, mincore), or False where they cannot be had


def _libc():
    global _libc_calls
    if _libc_calls is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            madvise, mincore = libc.madvise, libc.mincore
            madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            madvise.restype = mincore.restype = ctypes.c_int
            _libc_calls = (madvise, mincore)
        except (OSError, AttributeError):
            _libc_calls = False
    return _libc_calls


def _resident(address: int) -> bool:
    """Whether the page at ``address`` (page-aligned) is in memory already."""
    calls = _libc()
    if not calls:
        return False
    vec = (ctypes.c_ubyte * 1)()
    return calls[1](address, 4096, vec) == 0 and bool(vec[0] & 1)


def _advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask Linux to back the 2 MiB-aligned interior of ``t`` with huge pages, if that
    memory is fresh; return ``t``.

    The output of a large warp is often freshly mapped memory (glibc serves big
    allocations with mmap, or grows its heap again after trimming it), and writing it
    first costs a page fault per 4 KiB: a third of a 64 x 3 x 224 x 224 forward pass,
    and a 25.7 MB output took 10 ms of faults on one thread here. With huge pages that
    is one fault per 2 MiB (2.3 ms). Memory already in use (its first page resident)
    is left alone: advised, it stalled now and then for 6-23 ms here (a 25.7 MB output
    filled in 0.8 ms otherwise), as the kernel gathered its pages into huge ones. NumPy
    gives the same advice for its arrays of 4 MiB and more. A no-op off Linux, below
    ``HUGE_PAGES_FROM``, or where madvise is refused.
    """
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_PAGES_FROM or not sys.platform.startswith("linux"):
        return t
    calls = _libc()
    if calls:
        start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start and not _resident(start):
            calls[0](start, end - start, _MADV_HUGEPAGE)  # advice only: failure is harmless
    return t


def _empty(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return _advise_huge_pages(torch.empty(*shape, dtype=dtype))


def _eps16(dtype: torch.dtype) -> float:
    return 16 * torch.finfo(dtype).eps


_EYE9 = np.eye(3).reshape(9)


def _tile_lanes(x: torch.Tensor, nearest: bool) -> int:
    """Channels per tile where a warp runs on the tiled kernels (bilinear, a full vector
    of channels), else 0."""
    lanes = _load().tile_lanes(x.element_size())
    return lanes if not nearest and x.shape[1] >= lanes else 0


class _FusedWarp(torch.autograd.Function):
    """The fused warp. ``theta``: the (N, 3, 3) matrices, or where ``entries`` is an int
    the (N, entries) parameters that are their first entries (row-major; the rest are the
    identity's): the matrix is then built in NumPy and its gradient sliced, which spares
    a few autograd nodes per call (a tenth of a small warp's time)."""

    @staticmethod
    def forward(ctx, input, theta, entries, out_h, out_w, nearest, border, align, projective):
        k = _load()
        x = input.detach().contiguous()
        n = x.shape[0]
        if entries is None:
            m = theta.detach().to(torch.float64).contiguous().numpy()
        else:
            m = np.empty((n, 9))
            m[:] = _EYE9
            m[:, :entries] = theta.detach().numpy()
            m = m.reshape(n, 3, 3)
        c = x.shape[1]
        out = _empty(n, c, out_h, out_w, dtype=x.dtype)
        serial = _serial(out.numel())
        threads = 1 if serial else _set_threads()
        eps16 = _eps16(theta.dtype)
        lanes = _tile_lanes(x, nearest)
        suffix = "[serial]" * serial
        if lanes:
            # Runs of output rows (whole chunks) per (image, channel group) pair, enough for
            # 4 tasks a thread; the split does not change the result.
            pairs = n * -(-c // lanes)
            chunks = out_h // k._chunking(out_h, out_w, 1)[0]
            runs = 1 if serial else max(1, min(chunks, -(-4 * threads // pairs)))
            tasks = min(pairs * runs, 4 * threads)  # each with its scratch memory
            fn = k.warp_forward_tiles_serial if serial else k.warp_forward_tiles
            _timed(f"forward-tiles[{x.dtype}]{suffix}", fn, x.numpy(), m, out.numpy(), border,
                   align, projective, eps16, runs, tasks, 0)
        else:
            # Contiguous runs of output rows; the split does not change the result.
            tasks = max(1, min(n * out_h, 8 * threads))
            fn = k.warp_forward_serial if serial else k.warp_forward
            _timed(f"forward[{x.dtype}]{suffix}", fn, x.numpy(), m, out.numpy(), nearest,
                   border, align, projective, eps16, tasks,
                   nearest and x.dtype == torch.float32, np.empty(tasks))
        ctx.save_for_backward(x)
        ctx.m = m
        ctx.options = (entries, nearest, border, align, projective, eps16, theta.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError(
                "backend 'numba' does not support double backward (create_graph=True); "
                "use backend='torch' for higher-order gradients"
            )
        k = _load()
        (x,) = ctx.saved_tensors
        m = ctx.m
        entries, nearest, border, align, projective, eps16, theta_dtype = ctx.options
        need_x, need_m = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_m):
            return (None,) * 9
        go = grad_out.contiguous().to(x.dtype)
        n, c = x.shape[:2]
        lanes = _tile_lanes(x, nearest)
        groups = -(-c // (lanes or k.CHANNEL_GROUP))
        # The kernel writes every value of gx itself, each task its own planes.
        gx = _empty(*x.shape, dtype=x.dtype) if need_x else torch.zeros(1, 1, 1, 1, dtype=x.dtype)
        gm = np.zeros((n if need_m else 1, groups if need_m else 1, 3, 3))
        serial = _serial(go.numel())
        threads = 1 if serial else _set_threads()
        suffix = "[serial]" * serial
        # Tasks take runs of (image, channel group) pairs, with scratch memory for the
        # run; the split does not change the result.
        tasks = max(1, min(n * groups, (4 if lanes else 8) * threads))
        if lanes:
            fn = k.warp_backward_tiles_serial if serial else k.warp_backward_tiles
            _timed(f"backward-tiles[{x.dtype}]{suffix}", fn, x.numpy(), m, go.numpy(),
                   gx.numpy(), gm, need_x, need_m, border, align, projective, eps16, tasks)
        else:
            fn = k.warp_backward_serial if serial else k.warp_backward
            _timed(f"backward[{x.dtype}]{suffix}", fn, x.numpy(), m, go.numpy(), gx.numpy(),
                   gm, need_x, need_m, nearest, border, align, projective, eps16,
                   nearest and x.dtype == torch.float32, tasks, np.empty(n * groups))
        grad_theta = None
        if need_m:
            # Fixed-order sum of the per-channel-group partials: deterministic.
            total = gm[:, 0]
            for g in range(1, groups):
                total = total + gm[:, g]
            if entries is not None:
                total = total.reshape(n, 9)[:, :entries]
            elif not projective:
                total[:, 2] = 0.0  # the affine path never reads the last row
            grad_theta = torch.from_numpy(np.ascontiguousarray(total)).to(theta_dtype)
        return (gx if need_x else None), grad_theta, None, None, None, None, None, None, None


class NumbaBackend(FusedMatrixBackend):
    """Fused CPU kernels for 2-D matrix families (bilinear/nearest, zeros/border padding)."""

    name = "numba"
    package = "numba"
    dtypes = (torch.float32, torch.float64)

    def device_unsupported(self, x: torch.Tensor) -> str | None:
        if x.device.type != "cpu":
            return f"it runs on CPU tensors, got a tensor on {x.device}"
        return None

    def __call__(self, call: WarpCall) -> torch.Tensor:
        tf = call.transform
        entries = tf._param_entries()
        theta = call.params if entries is not None else tf._matrix(call.params)
        return _FusedWarp.apply(call.input, theta, entries, *self._options(call))
