"""The fused warp backends: compiled kernels behind :func:`torchstn.warp`.

Each folder here is one backend, registered by :mod:`torchstn` as a
:class:`~torchstn.warping.FusedMatrixBackend`:

- :mod:`torchstn.ops.numba` (``backend="numba"``): CPU kernels compiled by Numba, float32
  and float64;
- :mod:`torchstn.ops.triton` (``backend="triton"``): GPU kernels written in Triton,
  float32, float16 and bfloat16.

:mod:`torchstn.warping` holds what the backends share: the :class:`~torchstn.warping.Backend`
and :class:`~torchstn.warping.FusedMatrixBackend` base classes (which warps a fused backend
supports, and the error that says why not) and the dispatch of ``backend="auto"``. Both
fused backends cover the 2-D matrix families, bilinear and nearest sampling, zeros and
border padding; everything else falls back to the reference path, ``backend="torch"``.

Each backend has the same layers, top down:

- ``backend.py``: the backend class (what it supports, where it runs), and the PyTorch
  custom operators it calls (``torch.ops.torchstn.numba_warp`` / ``triton_warp`` and
  their backward operators; fake implementations, autograd formulas, the non-finite
  rule), so that ``torch.compile`` and ``torch.export`` capture a warp whole;
- in the same file, the forward and backward entry points ``fused_forward`` and
  ``fused_backward``: plain functions of tensors (and, on the CPU, NumPy arrays) that
  allocate the outputs, choose a kernel and run it;
- ``kernels.py``: the compiled kernels those entry points call, defined in the other
  files of the folder.

Nothing in this package imports a compiler when :mod:`torchstn` is imported: each
``backend.py`` imports its ``kernels`` module on its first warp (``_load``), and only
then are Numba or Triton imported. Keep it so (``import torchstn`` must not import
``numba`` or ``triton``). How the kernels work, and which file holds what:
``docs/kernels.md``.
"""

__all__: list[str] = []
