"""The fused CPU backend: matrix families warped by Numba kernels, forward and backward.

The grid generator and the sampler run as one kernel that computes each sample
coordinate from the 3x3 matrix on the fly (see :mod:`torchstn.ops.numba`); the backward
pass reduces the coordinate gradient to the matrix inside the kernel. Where the
parameters are the matrix entries (``affine``, ``projective``) the kernels take them
directly; otherwise autograd carries the matrix gradient to the family's parameters.

Layers: :class:`NumbaBackend` (what it supports) calls the autograd function
``_FusedWarp`` (parameters to matrices, the matrix gradient back to the parameters),
which calls the entry points :func:`fused_forward` and :func:`fused_backward`: plain
functions of tensors and arrays that pick a kernel (plain or tiled, serial or parallel)
and run it. Nothing here imports Numba: the kernels load on first use (``_load``).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ...warping import FusedMatrixBackend, WarpCall
from .memory import _empty

__all__ = ["SERIAL_BELOW", "NumbaBackend", "compile_seconds", "fused_backward",
           "fused_forward"]

_kernels = None
#: Seconds spent compiling (or loading from Numba's cache) each kernel, by name.
compile_seconds: dict[str, float] = {}


# The files whose code the compiled kernels hold (kernels inline helpers across files).
_KERNEL_SOURCES = ("coords.py", "prefetch.py", "lanes.py", "forward.py", "backward.py",
                   "tiles.py", "kernels.py")


def _drop_stale_cache(here: str | None = None) -> None:
    """Delete Numba's cached kernels if any kernel source file changed since they were
    written.

    Numba checks only the file that defines a cached function; a kernel that inlines a
    helper from another file would keep its old compiled code after that helper changed.
    A digest of all the kernel sources, kept beside the cache, catches that. (Only the
    default cache folder, ``__pycache__``; with ``NUMBA_CACHE_DIR`` set, that folder is
    the user's to clear.)
    """
    import hashlib

    here = here or os.path.dirname(os.path.abspath(__file__))
    cache = os.path.join(here, "__pycache__")
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    digest = hashlib.sha256()
    for name in _KERNEL_SOURCES:
        with open(os.path.join(here, name), "rb") as f:
            digest.update(f.read())
    stamp = os.path.join(cache, "torchstn-kernel-sources.sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest.hexdigest():
                return
    except OSError:
        pass
    try:
        os.makedirs(cache, exist_ok=True)  # the stamp goes where Numba will cache
        for entry in os.listdir(cache):
            if entry.endswith((".nbi", ".nbc")):
                os.unlink(os.path.join(cache, entry))
        tmp = f"{stamp}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(digest.hexdigest() + "\n")
        os.replace(tmp, stamp)
    except OSError:  # a read-only install, or another process got there first
        pass


def _load():
    global _kernels
    if _kernels is None:
        _drop_stale_cache()
        from . import kernels

        _kernels = kernels
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


def _eps16(dtype: torch.dtype) -> float:
    return 16 * torch.finfo(dtype).eps


_EYE9 = np.eye(3).reshape(9)


def _tile_lanes(x: torch.Tensor, nearest: bool) -> int:
    """Channels per tile where a warp runs on the tiled kernels (bilinear, a full vector
    of channels), else 0."""
    lanes = _load().tile_lanes(x.element_size())
    return lanes if not nearest and x.shape[1] >= lanes else 0


def fused_forward(x: torch.Tensor, m: np.ndarray, out_h: int, out_w: int, nearest: bool,
                  border: bool, align: bool, projective: bool, eps16: float) -> torch.Tensor:
    """The warp of ``x`` by the matrices ``m``: ``(N, C, out_h, out_w)``, dtype of ``x``.

    x: contiguous ``(N, C, H, W)`` float32/float64 CPU tensor; m: C-contiguous
    ``(N, 3, 3)`` float64 array, each mapping normalised output points to input points;
    eps16: 16 machine epsilons of the parameters' dtype (the horizon threshold of
    projective warps). Which kernel runs, and on how many threads, never changes the
    result.
    """
    k = _load()
    n, c = x.shape[:2]
    out = _empty(n, c, out_h, out_w, dtype=x.dtype)
    serial = _serial(out.numel())
    threads = 1 if serial else _set_threads()
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
    return out


def fused_backward(x: torch.Tensor, m: np.ndarray, grad_out: torch.Tensor, need_x: bool,
                   need_m: bool, nearest: bool, border: bool, align: bool, projective: bool,
                   eps16: float) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """Gradients of :func:`fused_forward` (same ``x``, ``m`` and options) for ``grad_out``.

    Returns ``(grad_x, grad_m)``: grad_x like ``x`` where ``need_x``, else None; grad_m
    an ``(N, 3, 3)`` float64 array where ``need_m``, else None. Deterministic: the
    per-channel-group partials of grad_m are summed in a fixed order.
    """
    k = _load()
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
    total = None
    if need_m:
        # Fixed-order sum of the per-channel-group partials: deterministic.
        total = gm[:, 0]
        for g in range(1, groups):
            total = total + gm[:, g]
    return (gx if need_x else None), total


class _FusedWarp(torch.autograd.Function):
    """The fused warp. ``theta``: the (N, 3, 3) matrices, or where ``entries`` is an int
    the (N, entries) parameters that are their first entries (row-major; the rest are the
    identity's): the matrix is then built in NumPy and its gradient sliced, which spares
    a few autograd nodes per call (a tenth of a small warp's time)."""

    @staticmethod
    def forward(ctx, input, theta, entries, out_h, out_w, nearest, border, align, projective):
        x = input.detach().contiguous()
        n = x.shape[0]
        if entries is None:
            m = theta.detach().to(torch.float64).contiguous().numpy()
        else:
            m = np.empty((n, 9))
            m[:] = _EYE9
            m[:, :entries] = theta.detach().numpy()
            m = m.reshape(n, 3, 3)
        eps16 = _eps16(theta.dtype)
        out = fused_forward(x, m, out_h, out_w, nearest, border, align, projective, eps16)
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
        (x,) = ctx.saved_tensors
        m = ctx.m
        entries, nearest, border, align, projective, eps16, theta_dtype = ctx.options
        need_x, need_m = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_m):
            return (None,) * 9
        gx, total = fused_backward(x, m, grad_out, need_x, need_m, nearest, border, align,
                                   projective, eps16)
        grad_theta = None
        if need_m:
            if entries is not None:
                total = total.reshape(x.shape[0], 9)[:, :entries]
            elif not projective:
                total[:, 2] = 0.0  # the affine path never reads the last row
            grad_theta = torch.from_numpy(np.ascontiguousarray(total)).to(theta_dtype)
        return gx, grad_theta, None, None, None, None, None, None, None


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
