import math

import pytest
import torch
from helpers import smooth_image, smooth_volume

import torchstn as ts

FAMILIES = ts.list_transforms()
MATRIX_FAMILIES = [n for n in FAMILIES if ts.get_transform(n).is_matrix]


def _input_for(tf, n=2, c=2, dtype=torch.float64):
    shape = (n, c, 5, 6, 7) if tf.ndim == 3 else (n, c, 6, 7)
    return torch.rand(*shape, dtype=dtype)


def _random_params(tf, n=3, scale=0.2, dtype=torch.float64):
    return tf.identity(dtype=dtype) + scale * torch.randn(n, tf.num_params, dtype=dtype)


def test_registry_lists_every_family():
    assert FAMILIES == ["translation", "attention", "rotation", "similarity", "affine",
                        "projective", "affine3d", "tps"]
    assert [ts.get_transform(n).num_params for n in FAMILIES] == [2, 3, 3, 4, 6, 8, 12, 32]
    assert ts.get_transform("tps", grid_size=3).num_params == 18


@pytest.mark.parametrize(
    "name,mode",
    [(n, m) for n in FAMILIES for m in ts.MODES
     if not (m == "bicubic" and ts.get_transform(n).ndim == 3)],  # bicubic is 2-D only
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_parameters_return_the_input(name, mode, align_corners):
    tf = ts.get_transform(name)
    x = _input_for(tf)
    params = tf.identity(dtype=x.dtype).expand(x.shape[0], -1)
    assert params.shape == (2, tf.num_params)
    out = ts.warp(x, params, name, mode=mode, align_corners=align_corners)
    torch.testing.assert_close(out, x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_grid_is_the_grid_of_the_matrix(name):
    tf = ts.get_transform(name)
    p = _random_params(tf)
    m = tf.matrix(p)
    d = tf.ndim + 1
    assert m.shape == (3, d, d)
    size = (3, 1, *([4] * tf.ndim))
    if name == "projective":
        expected = ts.projective_grid(m, size)
    else:
        torch.testing.assert_close(m[:, -1], torch.eye(d, dtype=m.dtype)[-1].expand(3, d))
        expected = ts.affine_grid(m[:, :-1], size)
    torch.testing.assert_close(tf.grid(p, size), expected)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_param_entries_are_the_matrix_entries(name):
    """Where a family declares param_entries (fused backends then take the parameters as
    the matrix), they are the leading row-major entries and the rest the identity's."""
    tf = ts.get_transform(name)
    k = tf.param_entries
    assert k == {"affine": 6, "projective": 8}.get(name)
    if k is None:
        return
    p = _random_params(tf)
    flat = tf.matrix(p).reshape(3, -1)
    assert torch.equal(flat[:, :k], p)
    eye = torch.eye(tf.ndim + 1, dtype=p.dtype).reshape(-1)
    assert torch.equal(flat[:, k:], eye[k:].expand(3, -1))


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_from_matrix_inverts_matrix(name):
    tf = ts.get_transform(name)
    p = _random_params(tf)
    torch.testing.assert_close(tf.from_matrix(tf.matrix(p)), p)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_composition_equals_matrix_product(name):
    tf = ts.get_transform(name)
    a, b = _random_params(tf), _random_params(tf)
    c = tf.compose(a, b)
    assert c.shape == a.shape
    product = tf.matrix(a) @ tf.matrix(b)
    if name == "projective":  # homographies are equal up to scale; the family fixes m22 = 1
        product = product / product[:, 2:, 2:]
    torch.testing.assert_close(tf.matrix(c), product)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_inverse_gives_the_inverse_matrix(name):
    tf = ts.get_transform(name)
    p = _random_params(tf)
    eye = torch.eye(tf.ndim + 1, dtype=p.dtype).expand(3, -1, -1)
    product = tf.matrix(tf.inverse(p)) @ tf.matrix(p)
    torch.testing.assert_close(product / product[:, -1:, -1:], eye)
    torch.testing.assert_close(tf.compose(p, tf.inverse(p)), tf.identity(dtype=p.dtype).expand(3, -1),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_compose_agrees_with_resampling_the_grids(name):
    """Warping by a then b reads x at grid_a sampled at grid_b: that must be grid(compose(a, b)).

    Bilinear interpolation of grid_a reproduces it exactly for affine families (the grid
    is linear in the output coordinates), closely for projective ones.
    """
    tf = ts.get_transform(name)
    side = 24 if tf.ndim == 2 else 10
    size = (3, 1, *([side] * tf.ndim))
    a, b = _random_params(tf, 3, 0.2), _random_params(tf, 3, 0.2)
    grid_a = tf.grid(a, size, align_corners=True)
    grid_b = tf.grid(b, size, align_corners=True)
    channels_first = grid_a.movedim(-1, 1)  # grid_a as a (N, d, ...) image
    chained = ts.sample(channels_first, grid_b, align_corners=True).movedim(1, -1)
    inside = (grid_b.abs() <= 1).all(-1)
    composed = tf.grid(tf.compose(a, b), size, align_corners=True)
    tol = 1e-2 if name == "projective" else 1e-10
    torch.testing.assert_close(chained[inside], composed[inside], atol=tol, rtol=0)
    if name != "translation":  # the others do not commute: the order must matter
        reversed_order = tf.grid(tf.compose(b, a), size, align_corners=True)
        assert (chained[inside] - reversed_order[inside]).abs().max() > 5 * tol


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_warp_then_inverse_warp_returns_the_input(name):
    tf = ts.get_transform(name)
    if tf.ndim == 3:
        x = smooth_volume(2, 2, 32, 32, 32)
    else:
        x = smooth_image(2, 3, 64, 64)
    p = _random_params(tf, 2, 0.1)
    back = ts.warp(ts.warp(x, p, name), tf.inverse(p), name)
    c = (slice(None),) * 2 + tuple(slice(s // 4, -(s // 4)) for s in x.shape[2:])
    torch.testing.assert_close(back[c], x[c], atol=5e-3, rtol=0)
    assert (ts.warp(x, p, name)[c] - x[c]).abs().max() > 0.05  # the warp did move things


def test_projective_compose_and_inverse_refuse_a_nonpositive_last_entry():
    proj = ts.get_transform("projective")
    a = torch.tensor([[1.0, 0, 0, 0, 1, 0, 2, 0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0, -1.5, 0, 1, 0, 0, 0]], dtype=torch.float64)  # product m22 = -2
    with pytest.raises(ValueError, match=r"m22 <= 0 for batch entries \[0\]"):
        proj.compose(a, b)
    with pytest.raises(ValueError, match="m22 <= 0"):
        proj.inverse(torch.tensor([[1.0, 0, 2, 0, 1, 0, 1, 0]], dtype=torch.float64))


@pytest.mark.parametrize("name", ["attention", "similarity"])
def test_extreme_log_scales_stay_finite(name):
    tf = ts.get_transform(name)
    x = torch.rand(2, 1, 4, 4)
    p = tf.identity().repeat(2, 1)
    k = 0 if name == "attention" else 1
    p[0, k], p[1, k] = 89.0, -104.0  # exp overflows / underflows in float32
    p.requires_grad_(True)
    ts.warp(x, p, name).sum().backward()
    assert torch.isfinite(p.grad).all()
    assert torch.isfinite(tf.inverse(p.detach())).all()
    torch.testing.assert_close(tf.matrix(p.detach())[:, 0, 0].abs().log(),
                               torch.tensor([10.0, -10.0]))


def test_pinned_matrices():
    half_pi = torch.tensor([[math.pi / 2, 0.1, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(
        ts.get_transform("rotation").matrix(half_pi)[0],
        torch.tensor([[0.0, -1, 0.1], [1, 0, 0.2], [0, 0, 1]], dtype=torch.float64),
    )
    att = torch.tensor([[math.log(0.5), 0.3, -0.4]], dtype=torch.float64)
    torch.testing.assert_close(
        ts.get_transform("attention").matrix(att)[0],
        torch.tensor([[0.5, 0, 0.3], [0, 0.5, -0.4], [0, 0, 1]], dtype=torch.float64),
    )
    sim = torch.tensor([[math.pi, math.log(2.0), 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(
        ts.get_transform("similarity").matrix(sim)[0, :2, :2],
        torch.tensor([[-2.0, 0], [0, -2.0]], dtype=torch.float64),
    )
    proj = torch.arange(1.0, 9.0, dtype=torch.float64)[None]
    torch.testing.assert_close(ts.get_transform("projective").matrix(proj)[0].flatten(),
                               torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8, 1], dtype=torch.float64))


def test_translation_moves_content_by_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 2] = 1.0
    # tx = 0.5 in normalised units is 2 pixels of an 8-wide image: output(j) reads input(j + 2).
    out = ts.warp(x, torch.tensor([[0.5, -0.25]]), "translation")
    assert out[0, 0].nonzero().tolist() == [[4, 0]]


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_input_and_params(name):
    tf = ts.get_transform(name, grid_size=2) if name == "tps" else ts.get_transform(name)
    shape = (2, 2, 3, 4, 3) if tf.ndim == 3 else (2, 2, 4, 5)
    x = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
    # Random parameters away from the identity keep sample points off integer pixels,
    # where bilinear interpolation has kinks.
    p = (tf.identity(dtype=torch.float64) + 0.1 * torch.randn(2, tf.num_params,
                                                             dtype=torch.float64))
    p.requires_grad_(True)
    out_size = (2, 3, 3) if tf.ndim == 3 else (3, 4)
    assert torch.autograd.gradcheck(
        lambda x, p: ts.warp(x, p, tf, out_size=out_size, padding_mode="border"), (x, p)
    )


def test_non_matrix_family_and_registry_errors():
    tps = ts.get_transform("tps")
    with pytest.raises(NotImplementedError, match="transform 'tps' is not a matrix family: no compose"):
        tps.compose(tps.identity()[None], tps.identity()[None])
    with pytest.raises(ValueError, match=r"transform must be one of \['translation', .*\], got 'perspective'"):
        ts.get_transform("perspective")
    with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
        ts.get_transform("tps", grid_size=1)
    with pytest.raises(TypeError, match=r"transform 'affine' does not take options \['grid_size'\]"):
        ts.get_transform("affine", grid_size=3)
    aff = ts.get_transform("affine")
    with pytest.raises(ValueError, match=r"params must have shape \(N, 6\) for transform 'affine', got \(2, 2, 3\)"):
        aff.matrix(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="first has batch size 2 but second has batch size 3"):
        aff.compose(torch.zeros(2, 6), torch.zeros(3, 6))
    with pytest.raises(ValueError, match=r"matrix must have shape \(N, 3, 3\), got \(2, 4, 4\)"):
        aff.from_matrix(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="options \\['grid_size'\\] given with an already built"):
        ts.get_transform(tps, grid_size=3)
    with pytest.raises(ValueError, match="params has batch size 2 but size has batch size 5"):
        aff.grid(torch.zeros(2, 6), (5, 1, 4, 4))
    with pytest.raises(ValueError, match=r"size must be a sequence of ints \(N, C, H, W\), N >= 0"):
        aff.grid(torch.zeros(2, 6), (4, 4))
    with pytest.raises(ValueError, match=r"size must be a sequence of ints \(N, C, D, H, W\)"):
        ts.get_transform("affine3d").grid(torch.zeros(2, 12), (2, 1, 4, 4))


@pytest.mark.parametrize("name", FAMILIES)
def test_empty_batch(name):
    tf = ts.get_transform(name)
    shape = (0, 2, 3, 4, 5) if tf.ndim == 3 else (0, 2, 4, 5)
    out = ts.warp(torch.rand(*shape), torch.zeros(0, tf.num_params), name)
    assert out.shape == shape
