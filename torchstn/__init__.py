"""torchstn: Spatial Transformer Networks (Jaderberg et al., NeurIPS 2015) for PyTorch.

Convention everywhere: normalised coordinates ``(x, y)`` in ``[-1, 1]``, grids shaped
``(N, H, W, 2)``, transform parameters map OUTPUT coordinates to INPUT coordinates, and
``align_corners`` means what it means in :func:`torch.nn.functional.grid_sample`.
"""

from .grids import FAR, affine_grid, identity_grid, projective_grid
from .homography import homography_from_points
from .modules import LocalizationNet, SpatialTransformer, TransformerModule, find_transformers
from .multi import ParallelTransformer, RecurrentTransformer, tile_params
from .ops.numba import NumbaBackend
from .ops.triton import TritonBackend
from .saliency import SaliencySampler, saliency_grid
from .sampling import MODES, PADDING_MODES, sample
from .tps import lattice, tps_grid
from .transforms import (
    MatrixTransform,
    Transform,
    get_transform,
    list_transforms,
    register_transform,
)
from .warping import Backend, list_backends, register_backend, warp

# backend="auto" tries the fused CPU kernels, then the fused GPU kernels, then the
# reference path (both fused backends import their compiler lazily).
register_backend(NumbaBackend())
register_backend(TritonBackend(), first=False)

__version__ = "0.2.0"

__all__ = [
    "FAR",
    "MODES",
    "PADDING_MODES",
    "Backend",
    "LocalizationNet",
    "MatrixTransform",
    "ParallelTransformer",
    "RecurrentTransformer",
    "SaliencySampler",
    "SpatialTransformer",
    "Transform",
    "TransformerModule",
    "affine_grid",
    "find_transformers",
    "get_transform",
    "homography_from_points",
    "identity_grid",
    "lattice",
    "list_backends",
    "list_transforms",
    "projective_grid",
    "register_backend",
    "register_transform",
    "saliency_grid",
    "sample",
    "tile_params",
    "tps_grid",
    "warp",
]
