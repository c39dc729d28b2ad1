"""Fused GPU warp kernels (Triton): sample coordinates computed from the matrix per pixel.

One program handles ``BLOCK`` output pixels of one image, for every channel; neither the
(N, H, W, 2) grid nor its gradient is ever written to memory. Coordinates and sums are
in float32 whatever the image dtype (float32, float16, bfloat16); tensors are addressed
through their strides, so channels-last images need no copy.

Deterministic backward (bit-identical run to run, no floating-point atomics):

* input gradient: every contribution ``w * g`` is rounded ONCE to a fixed-point integer
  (``round(w * g * 2^s)``, with one power-of-two scale ``2^s`` per image chosen so that
  no sum can overflow int64) and accumulated with integer atomics. Integer addition is
  exact and associative, so the order in which the GPU performs the atomics cannot change
  the result. A second pass converts the sums back to floating point.
* parameter gradient: each program reduces its pixels and channels to 9 partial sums in a
  fixed order (``tl.sum``) and writes them to its own slot; the slots are summed by
  ``torch.sum`` afterwards, whose order does not depend on scheduling.

These kernels also run on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``), which
is how the test suite checks them on machines without a GPU.

Files: ``backend`` (:class:`TritonBackend`; imports no Triton); ``ops`` (the
``triton_op`` operators, defined on the first warp: ``triton_op`` imports Triton);
``launch`` (the entry points ``fused_forward`` / ``fused_backward`` the operators call;
imports no Triton); ``kernels`` (what the entry points launch, and ``BLOCK``; importing
it, on the first warp, imports Triton); ``forward``, ``backward`` (the kernels);
``coords`` (the jit helpers they share).
"""

from .backend import TritonBackend

__all__ = ["TritonBackend"]
