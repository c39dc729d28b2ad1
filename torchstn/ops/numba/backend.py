"""The fused CPU backend: matrix families warped by Numba kernels, forward and backward.

The grid generator and the sampler run as one kernel that computes each sample
coordinate from the 3x3 matrix on the fly (see :mod:`torchstn.ops.numba`); the backward
pass reduces the coordinate gradient to the matrix inside the kernel. Where the
parameters are the matrix entries (``affine``, ``projective``) the kernels take them
directly; otherwise autograd carries the matrix gradient to the family's parameters.

Layers: :class:`NumbaBackend` (what it supports) calls the custom operator
``torchstn::numba_warp`` (its autograd formula calls ``torchstn::numba_warp_backward``),
which calls the entry points :func:`fused_forward` and :func:`fused_backward`: plain
functions of tensors and arrays that pick a kernel (plain or tiled, serial or parallel)
and run it. Nothing here imports Numba: the kernels load on first use (``_load``).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from ..._nonfinite import identity_where_nonfinite
from ...warping import FusedMatrixBackend, WarpCall
from .._autograd import check_grad_out, check_out_size, check_warp_args, register_warp_autograd
from .memory import _empty

__all__ = ["SERIAL_BELOW", "NumbaBackend", "compile_kernels", "compile_seconds",
           "fused_backward", "fused_backward_antialias", "fused_forward",
           "fused_forward_antialias"]

_kernels = None
#: Seconds spent compiling (or loading from Numba's cache) each kernel, by name.
compile_seconds: dict[str, float] = {}


# The files whose code the compiled kernels hold (kernels inline helpers across files).
_KERNEL_SOURCES = ("coords.py", "prefetch.py", "lanes.py", "forward.py", "backward.py",
                   "tiles.py", "antialias.py", "kernels.py")


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


_EYE3 = torch.eye(3, dtype=torch.float64)


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
        # Each task with its scratch memory (set up once a task: serial warps run one).
        tasks = 1 if serial else min(pairs * runs, 4 * threads)
        fn = k.warp_forward_tiles_serial if serial else k.warp_forward_tiles
        _timed(f"forward-tiles[{x.dtype}]{suffix}", fn, x.numpy(), m, out.numpy(), border,
               align, projective, eps16, runs, tasks, 0)
    else:
        # Contiguous runs of output rows; the split does not change the result.
        tasks = 1 if serial else max(1, min(n * out_h, 8 * threads))
        fn = k.warp_forward_serial if serial else k.warp_forward
        _timed(f"forward[{x.dtype}]{suffix}", fn, x.numpy(), m, out.numpy(), nearest,
               border, align, projective, eps16, tasks,
               nearest and x.dtype == torch.float32, np.empty(tasks))
    return out


def _sum_groups(gm: np.ndarray) -> np.ndarray:
    """The matrix gradient ``(N, 3, 3)`` from its per-channel-group partials ``(N, G, 3,
    3)``, summed in a fixed order: deterministic."""
    total = gm[:, 0]
    for g in range(1, gm.shape[1]):
        total = total + gm[:, g]
    return total


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
    tasks = 1 if serial else max(1, min(n * groups, (4 if lanes else 8) * threads))
    if lanes:
        fn = k.warp_backward_tiles_serial if serial else k.warp_backward_tiles
        _timed(f"backward-tiles[{x.dtype}]{suffix}", fn, x.numpy(), m, go.numpy(),
               gx.numpy(), gm, need_x, need_m, border, align, projective, eps16, tasks)
    else:
        fn = k.warp_backward_serial if serial else k.warp_backward
        _timed(f"backward[{x.dtype}]{suffix}", fn, x.numpy(), m, go.numpy(), gx.numpy(),
               gm, need_x, need_m, nearest, border, align, projective, eps16,
               nearest and x.dtype == torch.float32, tasks, np.empty(n * groups))
    return (gx if need_x else None), (_sum_groups(gm) if need_m else None)


def _antialias_serial(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether an anti-aliased warp runs on the calling thread: as plain warps, counting
    each output value once per input pixel it may average (the size ratio, at most
    MAX_SAMPLES**2)."""
    per = x.shape[2] * x.shape[3] // (out.shape[2] * out.shape[3])
    return _serial(out.numel() * max(1, min(per, 1024)))


def fused_forward_antialias(x: torch.Tensor, m: np.ndarray, out_h: int, out_w: int,
                            nearest: bool, border: bool, align: bool, projective: bool,
                            eps16: float) -> torch.Tensor:
    """:func:`fused_forward`, anti-aliased (bilinear only: ``nearest`` is False)."""
    k = _load()
    n, c = x.shape[:2]
    out = _empty(n, c, out_h, out_w, dtype=x.dtype)
    serial = _antialias_serial(x, out)
    threads = 1 if serial else _set_threads()
    # Contiguous runs of output rows; the split does not change the result.
    tasks = 1 if serial else max(1, min(n * out_h, 8 * threads))
    fn = k.warp_antialias_forward_serial if serial else k.warp_antialias_forward
    _timed(f"antialias-forward[{x.dtype}]{'[serial]' * serial}", fn, x.numpy(), m,
           out.numpy(), border, align, projective, eps16, tasks)
    return out


def fused_backward_antialias(x: torch.Tensor, m: np.ndarray, grad_out: torch.Tensor,
                             need_x: bool, need_m: bool, nearest: bool, border: bool,
                             align: bool, projective: bool,
                             eps16: float) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """:func:`fused_backward` of :func:`fused_forward_antialias`. Deterministic: a task
    per (image, channel group), partial matrix gradients summed in a fixed order."""
    k = _load()
    go = grad_out.contiguous().to(x.dtype)
    n, c = x.shape[:2]
    serial = _antialias_serial(x, go)
    threads = 1 if serial else _set_threads()
    # Channel groups only where the images are too few to keep the threads busy: each
    # group recomputes the footprints. The split does not change the result.
    groups = 1 if serial else min(c, max(1, -(-4 * threads // n)))
    gx = _empty(*x.shape, dtype=x.dtype) if need_x else torch.zeros(1, 1, 1, 1, dtype=x.dtype)
    gm = np.zeros((n, groups, 3, 3))
    fn = k.warp_antialias_backward_serial if serial else k.warp_antialias_backward
    _timed(f"antialias-backward[{x.dtype}]{'[serial]' * serial}", fn, x.numpy(), m,
           go.numpy(), gx.numpy(), gm, need_x, need_m, border, align, projective, eps16,
           groups)
    return (gx if need_x else None), (_sum_groups(gm) if need_m else None)


def compile_kernels(dtype: torch.dtype) -> dict[str, float]:
    """Compile (or load from Numba's cache) every fused CPU kernel for images of
    ``dtype`` (float32 or float64): the plain and tiled warps, the anti-aliased ones,
    forward and backward, parallel and serial copies. Returns the seconds each took.

    A warp compiles its kernel on first use (seconds each); call this ahead of time, for
    instance while building a deployment image or before a timed run, to move that cost
    out of the first step. Kernels already compiled in this process are skipped.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"compile_kernels: dtype must be torch.float32 or torch.float64, "
                         f"got {dtype}")
    before = set(compile_seconds)
    m = np.eye(3)[None].copy()  # writeable, as the operators pass it (a read-only
    # array would compile a kernel of its own)
    eps16 = _eps16(dtype)
    lanes = _load().tile_lanes(torch.finfo(dtype).bits // 8)
    # Each shape once below and once above SERIAL_BELOW output values (the serial and
    # the parallel copy); one channel runs the plain kernels, a vector of them the tiles.
    for c in (1, lanes):
        for side in (4, math.isqrt(SERIAL_BELOW // c) + 1):
            x = torch.rand(1, c, side, side, dtype=dtype)
            out = fused_forward(x, m, side, side, False, False, False, False, eps16)
            fused_backward(x, m, out, True, True, False, False, False, False, eps16)
    # Anti-aliased, a 2x minification: each output value counts 4 times (_antialias_serial).
    for side in (4, math.isqrt(SERIAL_BELOW // 4) + 1):
        x = torch.rand(1, 1, 2 * side, 2 * side, dtype=dtype)
        out = fused_forward_antialias(x, m, side, side, False, False, False, False, eps16)
        fused_backward_antialias(x, m, out, True, True, False, False, False, False, eps16)
    return {k: v for k, v in compile_seconds.items() if k not in before}


# --- The custom operators -------------------------------------------------------------
#
# torchstn::numba_warp(input, matrix, ...) is the fused warp as a PyTorch operator, with
# the schema of torchstn::triton_warp: matrix is (N, 3, 3), each image's map from
# normalised output to input points. Its CPU implementation runs the kernels above, its
# fake implementation gives the output's shape (so torch.compile and torch.export trace
# through it without running it), and its autograd formula (ops/_autograd.py, shared
# with the Triton operator) calls torchstn::numba_warp_backward.
#
# The non-finite rule (torchstn._nonfinite): an image whose matrix has a NaN or inf entry
# is warped as the identity and its output set to NaN; its gradients are zero. Applied
# inside the implementation, where a data-dependent branch costs nothing and is invisible
# to the compiler. The operator's decomposition is the reference path
# (torchstn.ops._reference): ONNX exports write that (torchstn.warp takes it under
# torch.onnx.export; torchstn.export.export_onnx decomposes an exported program to it).

_DTYPES = (torch.float32, torch.float64)


def _matrices(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """The (N, 3, 3) float64 matrices, C-contiguous, and the mask of non-finite images
    (None if all are finite); non-finite images get the identity."""
    m = matrix.detach().to("cpu", torch.float64)
    m, finite = identity_where_nonfinite(m, _EYE3)
    bad = None if bool(finite.all()) else (~finite).numpy()
    return np.ascontiguousarray(m.numpy()), bad


def _define_ops(name: str, antialias: bool):
    """Define the forward operator ``torchstn::<name>`` and its backward operator
    ``torchstn::<name>_backward`` on the kernels (plain, or anti-aliased: ``antialias``),
    with their fake implementations and autograd formula; return both."""

    def check_mode(nearest: bool) -> None:
        if antialias and nearest:
            raise ValueError(f"torchstn::{name}: nearest must be False (the anti-aliased "
                             "kernels sample bilinearly)")

    @torch.library.custom_op(f"torchstn::{name}", mutates_args=(), device_types="cpu")
    def forward(input: torch.Tensor, matrix: torch.Tensor, out_h: int, out_w: int,
                nearest: bool, border: bool, align_corners: bool,
                projective: bool) -> torch.Tensor:
        check_warp_args(name, input, matrix, _DTYPES)
        check_out_size(name, out_h, out_w)
        check_mode(nearest)
        m, bad = _matrices(matrix)
        run = fused_forward_antialias if antialias else fused_forward
        out = run(input.contiguous(), m, out_h, out_w, nearest, border, align_corners,
                  projective, _eps16(matrix.dtype))
        if bad is not None:
            out[torch.from_numpy(bad)] = float("nan")
        return out

    @forward.register_fake
    def _(input, matrix, out_h, out_w, nearest, border, align_corners, projective):
        check_warp_args(name, input, matrix, _DTYPES)
        check_out_size(name, out_h, out_w)
        check_mode(nearest)
        return input.new_empty(input.shape[0], input.shape[1], out_h, out_w)

    @torch.library.custom_op(f"torchstn::{name}_backward", mutates_args=(),
                             device_types="cpu")
    def backward(grad_out: torch.Tensor, input: torch.Tensor, matrix: torch.Tensor,
                 nearest: bool, border: bool, align_corners: bool, projective: bool,
                 need_input: bool, need_matrix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_warp_args(f"{name}_backward", input, matrix, _DTYPES)
        check_grad_out(f"{name}_backward", grad_out, input)
        check_mode(nearest)
        m, bad = _matrices(matrix)
        go = grad_out
        if bad is not None:
            go = grad_out.clone()
            go[torch.from_numpy(bad)] = 0.0
        gx = gm = None
        if need_input or need_matrix:
            run = fused_backward_antialias if antialias else fused_backward
            gx, gm = run(input.contiguous(), m, go, need_input, need_matrix, nearest, border,
                         align_corners, projective, _eps16(matrix.dtype))
        if need_matrix:
            if not projective:
                gm[:, 2] = 0.0  # the affine path never reads the last row
            grad_matrix = torch.from_numpy(np.ascontiguousarray(gm)).to(matrix.dtype)
        else:
            grad_matrix = matrix.new_empty(0)
        return (gx if need_input else input.new_empty(0)), grad_matrix

    @backward.register_fake
    def _(grad_out, input, matrix, nearest, border, align_corners, projective, need_input,
          need_matrix):
        return (input.new_empty(input.shape) if need_input else input.new_empty(0),
                matrix.new_empty(matrix.shape) if need_matrix else matrix.new_empty(0))

    register_warp_autograd(forward, backward,
                           getattr(torch.ops.torchstn, f"{name}_backward"), "numba")
    return forward, backward


#: The fused warp of ``input`` ``(N, C, H, W)`` by ``matrix`` ``(N, 3, 3)``:
#: ``(N, C, out_h, out_w)``, contiguous, dtype of ``input``. Its backward operator
#: returns ``(grad_input, grad_matrix)``, like ``input`` and ``matrix`` (the last row 0
#: unless ``projective``), an empty tensor for a gradient not asked for.
numba_warp, numba_warp_backward = _define_ops("numba_warp", antialias=False)
#: The same, anti-aliased (:mod:`torchstn.ops.numba.antialias`; ``nearest`` must be False).
numba_warp_antialias, numba_warp_antialias_backward = _define_ops("numba_warp_antialias",
                                                                  antialias=True)


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
        entries = call.transform._param_entries()
        if entries is None:
            matrix = self._matrices(call)
        else:
            # Parameters that are the matrix's first entries (affine 6, projective 8): one
            # concatenation with the identity's rest, and the operator's own non-finite
            # rule (zero gradient to such an image). Measured: the generic path (the
            # family's map and the mask in autograd) cost a small warp about 40% more.
            p = call.params
            rest = torch.eye(3, dtype=p.dtype, device=p.device).reshape(1, 9)[:, entries:]
            matrix = torch.cat([p, rest.expand(p.shape[0], 9 - entries)], 1).view(-1, 3, 3)
        op = torch.ops.torchstn.numba_warp_antialias if call.antialias else (
            torch.ops.torchstn.numba_warp)
        return op(call.input, matrix, *self._options(call))

    def antialias_unsupported(self, call: WarpCall) -> str | None:
        if call.mode != "bilinear":
            return f"antialias with mode {call.mode!r} runs on backend 'torch'"
        return None
