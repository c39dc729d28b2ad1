"""Fused CPU warp kernels (Numba): sample coordinates are computed from the matrix per pixel.

Neither the (N, H, W, 2) sampling grid nor its gradient is ever written to memory. Every
kernel here trusts its inputs (C-contiguous float32/float64 arrays of the right shapes);
:mod:`torchstn.ops.numba.backend` validates and dispatches.

Coordinates follow :func:`torchstn.grids.affine_grid` / :func:`torchstn.grids.projective_grid`
and :func:`torch.nn.functional.grid_sample`, computed in float64 whatever the image dtype.

Speed, measured on a 2-core Zen 4 VM (see ``benchmarks/bench_sampler.py``):

- output rows are taken in chunks of whole rows (about _CHUNK samples), and each chunk
  is a pipeline of short loops over scratch arrays: coordinates and taps
  (vectorised), then the tap loads (scalar: AVX-512 gathers are no faster there), then
  the arithmetic on the loaded values (vectorised);
- the input rows a block of output rows reads are first read row by row (``_touch``):
  the diagonal walk of a rotated warp defeats the hardware prefetcher, and this halves
  the forward time of large images;
- the many-channel loops step flat unsigned offsets by a plane (no per-access index
  arithmetic or negative-index wraparound);
- from a full vector of channels on (16 float32, 8 float64), bilinear warps run on
  tiles: channels transposed next to each other, a tap one vector load
  (``warp_forward_tiles``, ``warp_backward_tiles``; see :mod:`torchstn.ops.numba.tiles`).

Determinism: the forward pass writes each output value from one task. In the backward
pass one unit of work is an (image, group of ``CHANNEL_GROUP`` channels, or of
``tile_lanes`` on tiles) pair: it alone writes its
channels' input gradient, in a fixed order, and its partial matrix gradient goes to its
own slot; the slots are summed in a fixed order afterwards. Chunk sums are reassociated
by the compiler (``_chunk_sums``), into an order fixed by the compiled code. Nothing
depends on the thread count or on scheduling, so results are bit-identical run to run.

Files (one concern each; docs/kernels.md has the whole map):

- ``backend``: :class:`NumbaBackend`, the custom operators, the entry points
  ``fused_forward`` / ``fused_backward``, threads; ``memory``: huge pages for large
  outputs. These two are all that ``import torchstn`` loads: neither imports Numba.
- ``kernels``: the compiled entry points the backend calls, and their serial copies.
  Importing it (on the first warp) imports Numba.
- ``forward``, ``backward``, ``tiles``: the kernels; ``coords``: constants and the
  per-chunk coordinate and tap helpers; ``prefetch``; ``lanes``: the vector intrinsics
  of the tiles.

Numba's cache (``cache=True``, files in ``__pycache__``) is invalidated only by a change
to the file that defines a cached function, not by changes to the helpers it inlines or
calls from other files. The backend therefore keeps a digest of all the kernel sources
beside the cache and deletes the cached kernels when it changes (``_drop_stale_cache``);
with ``NUMBA_CACHE_DIR`` set, clear that folder yourself after editing a file here.
"""

from .backend import NumbaBackend, compile_kernels, compile_seconds

__all__ = ["NumbaBackend", "compile_kernels", "compile_seconds"]
