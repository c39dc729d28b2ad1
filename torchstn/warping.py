"""One call from a transform family's parameters to the warped output, with backends.

``backend="torch"`` is the reference path: the family's grid generator followed by
:func:`torchstn.sample`. Fused backends register themselves with :func:`register_backend`
and are chosen by ``backend="auto"`` where they support the call; forcing an unsupported
backend raises an error that says why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from ._checks import check_batch, check_choice, check_spatial_size
from ._nonfinite import identity_where_nonfinite, nan_where
from ._registry import Registry
from .grids import compute_dtype
from .sampling import check_input, check_sampling_options, sample
from .transforms import Transform, resolve_transform

__all__ = ["BACKENDS", "Backend", "FusedMatrixBackend", "WarpCall", "check_antialias",
           "list_backends", "register_backend", "warp"]


@dataclass(frozen=True)
class WarpCall:
    """A validated warp request, handed to backends."""

    input: torch.Tensor  # (N, C, H, W) or (N, C, D, H, W)
    params: torch.Tensor  # (N, num_params), same dtype as the grid computation
    transform: Transform
    out_size: tuple[int, ...]  # spatial output size
    mode: str
    padding_mode: str
    align_corners: bool
    antialias: bool = False


class Backend:
    """A way to compute a warp. Subclasses set ``name`` and implement both methods.

    ``__call__`` gets the parameters as the caller gave them (in the working dtype) and
    keeps :func:`warp`'s non-finite rule itself: an image whose parameters have a NaN or
    inf entry comes out all NaN, with zero gradients, and never disturbs the others.
    (``warp`` used to mask them before calling the backend, see CHANGELOG.md; a backend
    of your own now gets them as they are: ``_nonfinite_as_identity`` and ``_nan_where``
    here do the masking in two calls.)
    """

    name = ""

    def unsupported(self, call: WarpCall) -> str | None:
        """``None`` if this backend can run ``call``, else the reason it cannot."""
        raise NotImplementedError

    def __call__(self, call: WarpCall) -> torch.Tensor:
        raise NotImplementedError

    def automatic(self, call: WarpCall) -> bool:
        """Whether ``backend="auto"`` may pick this backend for ``call`` (if supported)."""
        return True


class TorchBackend(Backend):
    """Reference path: materialise the grid, then ``F.grid_sample``."""

    name = "torch"

    def unsupported(self, call: WarpCall) -> str | None:
        return None

    def __call__(self, call: WarpCall) -> torch.Tensor:
        x = call.input
        params, finite = _nonfinite_as_identity(call.params, call.transform)
        grid = call.transform._grid(params, call.out_size, call.align_corners)
        if grid.dtype != x.dtype:
            # Half-precision inputs are sampled in float32 (the grid is never rounded to
            # half precision: that would misplace samples by up to a pixel).
            out = sample(x.to(grid.dtype), grid, mode=call.mode,
                         padding_mode=call.padding_mode, align_corners=call.align_corners,
                         antialias=call.antialias)
            out = out.to(x.dtype)
        else:
            out = sample(x, grid, mode=call.mode, padding_mode=call.padding_mode,
                         align_corners=call.align_corners, antialias=call.antialias)
        return _nan_where(out, finite)


class FusedMatrixBackend(Backend):
    """Base of the fused kernels: 2-D matrix families, bilinear/nearest, zeros/border.

    A subclass names the package its kernels need (``package``), the input dtypes they
    take (``dtypes``), where they run (``device_unsupported``), and implements
    ``__call__``, which runs its custom operator (``torch.ops.torchstn.*``) on the input,
    the family's matrices (or parameters) and :meth:`_options`.
    """

    package = ""
    dtypes: tuple[torch.dtype, ...] = ()

    def __init__(self):
        self._available = importlib.util.find_spec(self.package) is not None

    def device_unsupported(self, x: torch.Tensor) -> str | None:
        """``None`` if the kernels run where ``x`` lives, else why not."""
        raise NotImplementedError

    def unsupported(self, call: WarpCall) -> str | None:
        x = call.input
        if not self._available:
            return f"{self.package} is not installed (pip install {self.package})"
        reason = self.device_unsupported(x)
        if reason is not None:
            return reason
        if not call.transform.is_matrix or call.transform.ndim != 2:
            return (f"it supports the 2-D matrix families, got {call.transform.name!r} "
                    "(use backend='torch')")
        if x.dtype not in self.dtypes:
            names = [str(d).removeprefix("torch.") for d in self.dtypes]
            return (f"it supports {', '.join(names[:-1])} and {names[-1]} input, "
                    f"got {x.dtype}")
        if call.mode not in ("bilinear", "nearest"):
            return f"it supports mode 'bilinear' and 'nearest', got {call.mode!r}"
        if call.padding_mode not in ("zeros", "border"):
            return f"it supports padding_mode 'zeros' and 'border', got {call.padding_mode!r}"
        if x.numel() == 0 or 0 in call.out_size:
            return "empty input or output"
        if call.antialias:
            return self.antialias_unsupported(call)
        return None

    def antialias_unsupported(self, call: WarpCall) -> str | None:
        """``None`` if the kernels anti-alias ``call`` (a supported warp with
        ``antialias=True``), else why not."""
        return "antialias runs on backend 'torch'"

    @staticmethod
    def _matrices(call: WarpCall) -> torch.Tensor:
        """The (N, 3, 3) matrices of the call's parameters, NaN for the images whose
        parameters are not finite (the operators' non-finite rule then applies).

        Such images' matrices are built from the identity and replaced by NaN
        afterwards: the chain rule through the family's map (a cosine of NaN, ...)
        would otherwise turn their zero gradient into NaN.
        """
        clean, finite = _nonfinite_as_identity(call.params, call.transform)
        m = call.transform._matrix(clean)
        return torch.where(finite.view(-1, 1, 1), m, torch.full_like(m, float("nan")))

    @staticmethod
    def _options(call: WarpCall) -> tuple:
        """The arguments after the matrix: out_h, out_w, nearest, border, align_corners,
        projective."""
        return (int(call.out_size[0]), int(call.out_size[1]), call.mode == "nearest",
                call.padding_mode == "border", call.align_corners, call.transform.projective)


# Tried in this order by backend="auto"; the reference path is always last.
BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add("torch", TorchBackend())


def register_backend(backend: Backend, *, first: bool = True) -> None:
    """Add a backend; ``first`` puts it ahead of the others for ``backend="auto"``, else
    just ahead of the reference path."""
    names = BACKENDS.names()
    BACKENDS.add(backend.name, backend, before=names[0] if first else names[-1])


def list_backends() -> list[str]:
    """Registered backends, in the order ``backend="auto"`` tries them."""
    return BACKENDS.names()


def select_backend(name: str, call: WarpCall) -> Backend:
    check_choice("backend", name, ["auto", *BACKENDS])
    if name != "auto":
        backend = BACKENDS.get(name)
        reason = backend.unsupported(call)
        if reason is not None:
            raise ValueError(f"backend {name!r} cannot run this warp: {reason}")
        return backend
    for _, backend in BACKENDS.items():
        if backend.automatic(call) and backend.unsupported(call) is None:
            return backend
    raise AssertionError("the torch backend supports every call")  # pragma: no cover


def check_antialias(antialias: bool, transform: Transform) -> bool:
    """``antialias`` as a bool, refused for a family that is not 2-D."""
    if antialias and transform.ndim != 2:
        raise ValueError(f"antialias supports the 2-D families, got {transform.name!r}")
    return bool(antialias)


def _nonfinite_as_identity(params: torch.Tensor, tf: Transform):
    """The parameters with those of images holding a non-finite entry replaced by the
    identity's, and the per-image mask of finite rows ``(N,)`` (the rule:
    :mod:`torchstn._nonfinite`)."""
    return identity_where_nonfinite(params, tf.identity(dtype=params.dtype,
                                                        device=params.device))


#: Every output value NaN for the images whose mask is False (:mod:`torchstn._nonfinite`).
_nan_where = nan_where


def warp(
    input: torch.Tensor,
    params: torch.Tensor,
    transform: str | Transform,
    *,
    out_size=None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    antialias: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Warp ``input`` by a batch of transform parameters.

    Convention: the parameters map normalised OUTPUT coordinates to INPUT coordinates
    (see :mod:`torchstn.grids`); the family's identity parameters return the input
    unchanged.

    Non-finite parameters: every output value of an image whose parameters contain NaN
    or inf is NaN (other images of the batch are unaffected); gradients to such
    parameters are zero.

    Autocast: the warp is not autocast. It runs in the input's dtype (float16 and
    bfloat16 inputs in float32, returned in their dtype) with parameters cast to that
    working dtype, whatever autocast is enabled; the grid is never computed in half
    precision.

    Compile and export: ``warp`` has no data-dependent Python branch, and the fused
    backends are PyTorch custom operators (``torch.ops.torchstn.*``), so
    ``torch.compile(..., fullgraph=True)`` and ``torch.export.export`` capture it whole.

    Args:
        input: ``(N, C, H, W)``, or ``(N, C, D, H, W)`` for 3-D families (``affine3d``).
        params: ``(N, transform.num_params)``. float16 and bfloat16 inputs are warped in
            float32 and returned in their own dtype.
        transform: a family name (see :func:`torchstn.list_transforms`) or a
            :class:`~torchstn.transforms.Transform`.
        out_size: spatial output size ``(H_out, W_out)`` (``(D_out, H_out, W_out)`` in
            3-D); default: the input's.
        mode, padding_mode, align_corners, antialias: as in :func:`torchstn.sample`
            (``antialias``: average over each output pixel's footprint where the warp
            shrinks the image; 2-D families).
        backend: ``"auto"`` (the fastest registered backend that supports the call),
            ``"torch"`` (the reference path), or another name from
            :func:`torchstn.list_backends`.

    Returns:
        ``(N, C, *out_size)``, dtype of ``input``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> warp(x, torch.tensor([[1.0, 0.0]]), "translation")  # read one pixel to the right
        tensor([[[[1., 0.],
                  [3., 0.]]]])
    """
    tf = resolve_transform(transform)
    input = check_input(input, ranks=(tf.ndim + 2,))
    params = tf.check_params(params)
    check_batch("params", params, input.shape[0], "input")
    if params.device != input.device:
        raise ValueError(f"params is on {params.device} but input is on {input.device}")
    check_sampling_options(mode, padding_mode, input.dim())
    antialias = check_antialias(antialias, tf)
    spatial = tuple(input.shape[2:])
    out_size = spatial if out_size is None else check_spatial_size("out_size", out_size, tf.ndim)
    call = WarpCall(input, params.to(compute_dtype(input.dtype)), tf, out_size, mode,
                    padding_mode, bool(align_corners), antialias)
    chosen = select_backend(backend, call)
    if isinstance(chosen, FusedMatrixBackend) and (torch.onnx.is_in_onnx_export()
                                                   or torch.jit.is_tracing()):
        # ONNX has no fused warp: under torch.onnx.export (either exporter) and
        # TorchScript tracing the warp takes the reference path, the fused operators'
        # decomposition (torchstn.ops._reference), which ONNX writes as GridSample.
        chosen = BACKENDS.get("torch")
    device = input.device.type
    if torch.is_autocast_enabled(device):
        # Autocast would run the grid's matrix products in half precision, misplacing
        # samples by up to a pixel: the warp keeps the precision it was given.
        with torch.autocast(device, enabled=False):
            return chosen(call)
    return chosen(call)
