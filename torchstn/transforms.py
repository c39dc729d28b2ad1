"""Transform families: parameters -> sampling grid (paper, Sec. 3.2), in a registry.

Every family maps a batch of parameters ``(N, num_params)`` to a sampling grid, with
the convention of :mod:`torchstn.grids` (parameters map OUTPUT coordinates to INPUT
coordinates, normalised to ``[-1, 1]``). Parameterisations are chosen to be usable as a
network's raw (unconstrained) output: every finite vector gives a finite grid, scales
are ``exp`` of a log-scale clamped to ``[-10, 10]`` so they can neither reach zero, go
negative nor overflow, and angles are in radians and need no wrapping.

=============  ======  ==========================================  =====================
family         params  parameters                                  identity
=============  ======  ==========================================  =====================
translation    2       ``(tx, ty)``                                ``0, 0``
attention      3       ``(log_s, tx, ty)``: ``[[s,0,tx],[0,s,ty]]``  ``0, 0, 0``
rotation       3       ``(angle, tx, ty)``                         ``0, 0, 0``
similarity     4       ``(angle, log_s, tx, ty)``                  ``0, 0, 0, 0``
affine         6       theta ``(2, 3)`` row-major                  ``1, 0, 0, 0, 1, 0``
projective     8       the 3x3 matrix row-major, last entry 1      ``1,0,0, 0,1,0, 0,0``
tps            2K      source control points ``(x1, y1, ...)``     the target lattice
affine3d       12      theta ``(3, 4)`` row-major                  ``[I | 0]``
=============  ======  ==========================================  =====================

Rotation by ``angle`` uses ``R = [[cos, -sin], [sin, cos]]``; translations are in
normalised units (1.0 = half the image). Matrix families expose their homogeneous
``matrix`` (``(N, 3, 3)``, or ``(N, 4, 4)`` for ``affine3d``), ``compose`` and ``inverse``;
each family is closed under both, except that a projective product or inverse whose last
matrix entry is <= 0 cannot be written with that entry fixed to +1 and raises an error.
"""

from __future__ import annotations

import torch

from ._checks import check_batch, check_float, check_shape, check_size, check_tensor
from ._registry import Registry
from .grids import _affine_grid, _projective_grid
from .tps import _tps_grid, lattice

__all__ = ["Transform", "MatrixTransform", "get_transform", "list_transforms", "register_transform"]

_TRANSFORMS: Registry[Transform] = Registry("transform")


def register_transform(name: str):
    """Class decorator adding a family to the registry under ``name``."""
    return _TRANSFORMS.register(name)


def get_transform(name: str | Transform, **options) -> Transform:
    """The transform family registered as ``name``, built with ``options``.

    Example:
        >>> get_transform("tps", grid_size=3).num_params
        18
    """
    if isinstance(name, Transform):
        if options:
            raise ValueError(f"options {sorted(options)} given with an already built transform")
        return name
    return _TRANSFORMS.create(name, **options)


def list_transforms() -> list[str]:
    """Names of the registered transform families."""
    return _TRANSFORMS.names()


class Transform:
    """A family of spatial transforms with ``num_params`` parameters per image."""

    name: str = ""
    num_params: int = 0
    #: Spatial dimensions: 2 for images ``(N, C, H, W)``, 3 for volumes.
    ndim: int = 2
    is_matrix = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_params={self.num_params})"

    def identity(self, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The parameters ``(num_params,)`` of the identity transform."""
        raise NotImplementedError

    def check_params(self, params: torch.Tensor, name: str = "params") -> torch.Tensor:
        params = check_tensor(name, params)
        check_float(name, params)
        check_shape(name, params, (None, self.num_params),
                    f"(N, {self.num_params}) for transform {self.name!r}")
        return params

    def grid(self, params: torch.Tensor, size, *, align_corners: bool = False) -> torch.Tensor:
        """Sampling grid ``(N, H, W, 2)`` (``(N, D, H, W, 3)`` in 3-D) for OUTPUT ``size``.

        ``size`` is the full output size ``(N, C, H, W)`` (``(N, C, D, H, W)`` in 3-D).
        """
        params = self.check_params(params)
        size = check_size("size", size, (self.ndim + 2,))
        check_batch("params", params, size[0], "size")
        return self._grid(params, size[2:], bool(align_corners))

    def _grid(self, params: torch.Tensor, spatial: tuple[int, ...], align_corners: bool):
        """Unchecked :meth:`grid` for a spatial output size."""
        raise NotImplementedError

    # Matrix-family operations; non-matrix families say so clearly.
    def _no_matrix(self, what: str):
        raise NotImplementedError(f"transform {self.name!r} is not a matrix family: no {what}")

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        self._no_matrix("matrix")

    def compose(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        self._no_matrix("compose")

    def inverse(self, params: torch.Tensor) -> torch.Tensor:
        self._no_matrix("inverse")


class MatrixTransform(Transform):
    """A family given by a homogeneous matrix, closed under composition and inversion."""

    is_matrix = True
    projective = False
    #: ``k`` where the parameters are the first ``k`` entries of the row-major matrix and
    #: the rest are the identity's (a fused backend then skips building the matrix).
    #: Declared by the class that defines ``_matrix``; see ``_param_entries``.
    param_entries: int | None = None

    def _matrix(self, p: torch.Tensor) -> torch.Tensor:
        """(N, num_params) -> (N, d + 1, d + 1); inputs already checked."""
        raise NotImplementedError

    def _param_entries(self) -> int | None:
        """``param_entries`` if the class that defines the ``_matrix`` in use declares it.

        A subclass that overrides ``_matrix`` without declaring ``param_entries`` again
        (parameters given as offsets from the identity, say) gets ``None``: its
        parameters are no longer the matrix entries.
        """
        for klass in type(self).__mro__:
            if "_matrix" in vars(klass):
                return vars(klass).get("param_entries")
        return None

    def _from_matrix(self, m: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_matrix`` for matrices of the family."""
        raise NotImplementedError

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """Homogeneous matrices ``(N, 3, 3)`` (``(N, 4, 4)`` in 3-D) of ``params``."""
        return self._matrix(self.check_params(params))

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """Parameters of homogeneous matrices of this family (the inverse of ``matrix``)."""
        matrix = check_tensor("matrix", matrix)
        check_float("matrix", matrix)
        d = self.ndim + 1
        check_shape("matrix", matrix, (None, d, d), f"(N, {d}, {d})")
        return self._from_matrix(matrix)

    def compose(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Parameters of warping by ``first`` then by ``second``: ``M(first) @ M(second)``.

        ``warp(warp(x, first), second)`` equals ``warp(x, compose(first, second))`` up to
        interpolation, because an output point p of the second warp reads the first
        warp's output at ``M(second) p``, which reads ``x`` at ``M(first) M(second) p``.
        """
        a, b = self.check_params(first, "first"), self.check_params(second, "second")
        if a.shape[0] != b.shape[0]:
            raise ValueError(
                f"first has batch size {a.shape[0]} but second has batch size {b.shape[0]}"
            )
        return self._from_matrix(self._matrix(a) @ self._matrix(b))

    def inverse(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters of the inverse transform: ``M(inverse(p)) = M(p)^-1``."""
        return self._from_matrix(torch.linalg.inv(self._matrix(self.check_params(params))))

    def _from_matrix_or_nan(self, m: torch.Tensor) -> torch.Tensor:
        """``_from_matrix`` without data-dependent checks (it traces whole): a matrix the
        family cannot express gives NaN parameters instead of an error."""
        return self._from_matrix(m)

    def _compose_unchecked(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """:meth:`compose` of checked parameters, NaN where it cannot be expressed."""
        return self._from_matrix_or_nan(self._matrix(first) @ self._matrix(second))

    def _grid(self, params, spatial, align_corners):
        m = self._matrix(params)
        if self.projective:
            return _projective_grid(m, spatial, align_corners)
        return _affine_grid(m[:, : self.ndim], spatial, align_corners)


def _homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """(N, d, d + 1) -> (N, d + 1, d + 1) by appending the row (0, ..., 0, 1)."""
    n, d = theta.shape[0], theta.shape[1]
    last = torch.zeros(1, 1, d + 1, dtype=theta.dtype, device=theta.device)
    last[0, 0, d] = 1
    return torch.cat([theta, last.expand(n, 1, d + 1)], dim=1)


def _rotation_scale(angle: torch.Tensor, scale: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    rows = [torch.stack([c, -s, t[:, 0]], -1), torch.stack([s, c, t[:, 1]], -1)]
    return _homogeneous(torch.stack(rows, dim=1))


#: Log-scales are clamped to this range (scales 4.5e-5 to 2.2e4) so that any finite
#: network output gives a finite, invertible matrix; the gradient is zero beyond it.
LOG_SCALE_LIMIT = 10.0


def _scale(log_s: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_s.clamp(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT))


def _log_scale(m: torch.Tensor) -> torch.Tensor:
    """log of the isotropic scale of a similarity matrix: half the log of its 2x2 determinant."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    return 0.5 * torch.log(det)


@register_transform("translation")
class Translation(MatrixTransform):
    name, num_params = "translation", 2

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.zeros(2, dtype=dtype, device=device)

    def _matrix(self, p):
        one = torch.ones_like(p[:, 0])
        return _rotation_scale(torch.zeros_like(one), one, p)

    def _from_matrix(self, m):
        return m[:, :2, 2].clone()


@register_transform("attention")
class Attention(MatrixTransform):
    """Isotropic zoom + translation, the paper's attention transformer (Sec. 4.3, 4.4)."""

    name, num_params = "attention", 3

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.zeros(3, dtype=dtype, device=device)

    def _matrix(self, p):
        return _rotation_scale(torch.zeros_like(p[:, 0]), _scale(p[:, 0]), p[:, 1:])

    def _from_matrix(self, m):
        return torch.cat([_log_scale(m)[:, None], m[:, :2, 2]], dim=1)


@register_transform("rotation")
class Rotation(MatrixTransform):
    name, num_params = "rotation", 3

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.zeros(3, dtype=dtype, device=device)

    def _matrix(self, p):
        return _rotation_scale(p[:, 0], torch.ones_like(p[:, 0]), p[:, 1:])

    def _from_matrix(self, m):
        return torch.cat([torch.atan2(m[:, 1, 0], m[:, 0, 0])[:, None], m[:, :2, 2]], dim=1)


@register_transform("similarity")
class Similarity(MatrixTransform):
    name, num_params = "similarity", 4

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.zeros(4, dtype=dtype, device=device)

    def _matrix(self, p):
        return _rotation_scale(p[:, 0], _scale(p[:, 1]), p[:, 2:])

    def _from_matrix(self, m):
        angle = torch.atan2(m[:, 1, 0], m[:, 0, 0])
        return torch.cat([angle[:, None], _log_scale(m)[:, None], m[:, :2, 2]], dim=1)


@register_transform("affine")
class Affine(MatrixTransform):
    name, num_params = "affine", 6
    param_entries = 6

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=dtype, device=device)

    def _matrix(self, p):
        return _homogeneous(p.view(-1, 2, 3))

    def _from_matrix(self, m):
        return m[:, :2].reshape(-1, 6).clone()


@register_transform("projective")
class Projective(MatrixTransform):
    """Homography ``[[a, b, c], [d, e, f], [g, h, 1]]``; see :func:`torchstn.projective_grid`."""

    name, num_params = "projective", 8
    projective = True
    param_entries = 8

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0], dtype=dtype, device=device)

    def _matrix(self, p):
        one = torch.ones_like(p[:, :1])
        return torch.cat([p, one], dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        # Homographies are defined up to a positive scale: normalise the last entry to 1.
        # A last entry <= 0 cannot be normalised so without flipping the sign of w (which
        # marks points behind the camera), so such matrices are refused.
        m22 = m[:, 2, 2]
        bad = m22 <= 16 * torch.finfo(m.dtype).eps * m[:, 2].abs().sum(-1)
        if bool(bad.any()):
            raise ValueError(
                "matrix has m22 <= 0 for batch entries "
                f"{bad.nonzero().flatten().tolist()}: not expressible as projective parameters "
                "(the 3x3 matrix with its last entry fixed to +1)"
            )
        return (m / m22.view(-1, 1, 1)).reshape(-1, 9)[:, :8].clone()

    def _from_matrix_or_nan(self, m):
        m22 = m[:, 2, 2]
        bad = m22 <= 16 * torch.finfo(m.dtype).eps * m[:, 2].abs().sum(-1)
        params = (m / m22.view(-1, 1, 1)).reshape(-1, 9)[:, :8]
        return torch.where(bad.view(-1, 1), torch.full_like(params, float("nan")), params)


@register_transform("affine3d")
class Affine3d(MatrixTransform):
    """3-D affine transformer for volumes ``(N, C, D, H, W)``; theta ``(3, 4)`` row-major."""

    name, num_params, ndim = "affine3d", 12, 3

    def identity(self, *, dtype=torch.float32, device=None):
        return torch.eye(3, 4, dtype=dtype, device=device).reshape(12)

    def _matrix(self, p):
        return _homogeneous(p.view(-1, 3, 4))

    def _from_matrix(self, m):
        return m[:, :3].reshape(-1, 12).clone()


@register_transform("tps")
class ThinPlateSpline(Transform):
    """Thin-plate spline with a ``grid_size x grid_size`` lattice of control points.

    Parameters are the ``K = grid_size**2`` source points ``(x1, y1, x2, y2, ...)``: where
    each lattice point of the output reads the input (see :func:`torchstn.tps_grid`).
    """

    name = "tps"

    def __init__(self, grid_size: int = 4):
        if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 2:
            raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
        self.grid_size = grid_size
        self.num_params = 2 * grid_size * grid_size

    def __repr__(self) -> str:
        return f"ThinPlateSpline(grid_size={self.grid_size})"

    def identity(self, *, dtype=torch.float32, device=None):
        return lattice(self.grid_size, dtype=dtype, device=device).reshape(-1)

    def _grid(self, params, spatial, align_corners):
        source = params.view(params.shape[0], self.num_params // 2, 2)
        return _tps_grid(source, spatial, None, align_corners)


def resolve_transform(transform: str | Transform) -> Transform:
    """A built transform from a name or an instance (for functions that accept both)."""
    if not isinstance(transform, (str, Transform)):
        raise TypeError(
            f"transform must be a family name {list_transforms()} or a Transform, "
            f"got {type(transform).__name__}"
        )
    return get_transform(transform)
