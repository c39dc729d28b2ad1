"""ParallelTransformer and RecurrentTransformer: identity at start, equal to their parts,
one warp by the composed matrix, float64 gradients, compile, export, ONNX, clear errors."""

import copy

import pytest
import torch
from torch import nn
from torch.export import Dim

import torchstn as ts
from torchstn.experiments.optim import parameter_groups


def _loc(c=1, size=12, features=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, features), nn.Tanh())


def _randomize_heads(module, seed=1, scale=0.05):
    """Small random head weights, so the transformers are not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.out_features in (3, 4, 6, 8, 32):
            with torch.no_grad():
                m.weight.copy_(scale * torch.randn(m.weight.shape, generator=gen))
    return module


def _x(n=3, c=1, size=12, seed=2, dtype=torch.float32):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed),
                      dtype=dtype)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("shared", [False, True])
def test_parallel_is_the_identity_at_initialisation(k, shared):
    x = _x()
    pt = ts.ParallelTransformer(k, "affine", localization=_loc(), shared_localization=shared,
                                loc_features=8, backend="torch")
    out = pt(x)
    assert out.shape == (3, k, 12, 12)
    torch.testing.assert_close(out, x.repeat(1, k, 1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("shared", [False, True])
def test_recurrent_is_the_identity_at_initialisation(steps, shared):
    x = _x()
    rt = ts.RecurrentTransformer(_loc(), "similarity", steps, shared_weights=shared,
                                 loc_features=8, backend="torch")
    out, params = rt(x, return_params=True)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(params, ts.get_transform("similarity").identity().expand(3, 4))
    assert len(rt.localizations) == (1 if shared else steps)


@pytest.mark.parametrize("family", ["attention", "affine", "projective", "tps"])
def test_unshared_parallel_equals_k_single_transformers(family):
    x = _x()
    pt = _randomize_heads(ts.ParallelTransformer(3, family, localization=_loc(),
                                                 loc_features=8, init="tile", backend="torch"))
    singles = []
    for member in pt.transformers:
        stn = ts.SpatialTransformer(_loc(seed=9), family, loc_features=8, backend="torch")
        stn.load_state_dict(member.state_dict())
        singles.append(stn)
    out, params = pt(x, return_params=True)
    assert torch.equal(out, torch.cat([s(x) for s in singles], 1))
    for p, s in zip(params, singles):
        assert torch.equal(p, s.parameters_of(x))
    # The copies of the given localisation net start with their own weights.
    first, second = (m.localization[1].weight for m in pt.transformers[:2])
    assert not torch.equal(first, second)
    listed = ts.ParallelTransformer(3, family, localization=_loc(), loc_features=8,
                                    output="list", backend="torch")
    listed.load_state_dict(pt.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(listed(x), out.chunk(3, 1)))


def test_shared_trunk_parallel_equals_single_transformers_on_that_trunk():
    x = _x()
    trunk = _loc()
    pt = _randomize_heads(ts.ParallelTransformer(2, "affine", localization=trunk,
                                                 shared_localization=True, loc_features=8,
                                                 backend="torch"))
    assert sum(p.numel() for p in pt.parameters()) == (
        sum(p.numel() for p in trunk.parameters()) + 2 * (8 * 6 + 6))
    out = pt(x)
    for i, head in enumerate(pt.heads):
        stn = ts.SpatialTransformer(copy.deepcopy(trunk), "affine", loc_features=8,
                                    backend="torch")
        stn.head.load_state_dict(head.state_dict())
        assert torch.equal(out[:, i : i + 1], stn(x))


def test_tile_init_places_the_crops_on_the_cells_of_a_grid():
    # Four affine crops: the quadrants, row by row.
    m = ts.get_transform("affine").matrix(ts.tile_params("affine", 4)).double()
    expected = torch.tensor([[0.5, 0, -0.5, 0, 0.5, -0.5], [0.5, 0, 0.5, 0, 0.5, -0.5],
                             [0.5, 0, -0.5, 0, 0.5, 0.5], [0.5, 0, 0.5, 0, 0.5, 0.5]],
                            dtype=torch.float64).view(4, 2, 3)
    torch.testing.assert_close(m[:, :2], expected)
    # Two attention crops: square, side by side.
    a = ts.get_transform("attention").matrix(ts.tile_params("attention", 2)).double()
    torch.testing.assert_close(a[:, 0, 2], torch.tensor([-0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(a[:, 0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    # TPS: the lattice shrunk into the cells; its warp of a ramp equals the affine crop's.
    x = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).contiguous()
    tps = ts.warp(x.expand(2, 1, 16, 16), ts.tile_params("tps", 2), "tps", backend="torch")
    aff = ts.warp(x.expand(2, 1, 16, 16), ts.tile_params("affine", 2), "affine",
                  backend="torch")
    torch.testing.assert_close(tps, aff, atol=1e-5, rtol=0)
    pt = ts.ParallelTransformer(4, "affine", in_channels=1, init="tile", output="list")
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1  # the top-left quadrant is bright: the first crop sees only it
    inner = [o[..., 1:-1, 1:-1] for o in pt(x)]  # the edges blend across the cell border
    assert inner[0].min() > 0.99 and max(o.max() for o in inner[1:]) < 0.01


def test_recurrent_with_one_step_equals_spatial_transformer():
    x = _x()
    rt = _randomize_heads(ts.RecurrentTransformer(_loc(), "affine", 1, loc_features=8,
                                                  out_size=(6, 6), backend="torch"))
    stn = ts.SpatialTransformer(_loc(seed=5), "affine", loc_features=8, out_size=(6, 6),
                                backend="torch")
    stn.localization.load_state_dict(rt.localizations[0].state_dict())
    stn.head.load_state_dict(rt.heads[0].state_dict())
    assert torch.equal(rt(x), stn(x))


@pytest.mark.parametrize("shared", [True, False])
def test_recurrent_output_is_one_warp_by_the_product_of_the_step_matrices(shared):
    x = _x(dtype=torch.float64)
    rt = _randomize_heads(ts.RecurrentTransformer(_loc(), "affine", 3, shared_weights=shared,
                                                  loc_features=8, backend="torch"),
                          scale=0.3).double()
    affine = ts.get_transform("affine")
    # Recompute step by step from the matrices: each step sees the input warped by the
    # product so far and multiplies its update on the right.
    total = None
    for step in range(3):
        i = 0 if shared else step
        seen = x if total is None else ts.warp(x, affine.from_matrix(total), "affine",
                                               backend="torch")
        update = affine.matrix(rt.heads[i](rt.localizations[i](seen)))
        total = update if total is None else total @ update
    out, params = rt(x, return_params=True)
    torch.testing.assert_close(affine.matrix(params), total, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, ts.warp(x, affine.from_matrix(total), "affine",
                                            backend="torch"), atol=1e-12, rtol=0)
    # Not a warp of a warp: resampling twice blurs, so the two differ.
    steps = rt.parameters_of(x, every_step=True)
    twice = ts.warp(ts.warp(x, steps[0], "affine", backend="torch"),
                    affine.from_matrix(torch.linalg.solve(affine.matrix(steps[0]),
                                                          affine.matrix(steps[1]))),
                    "affine", backend="torch")
    assert not torch.allclose(twice, ts.warp(x, steps[1], "affine", backend="torch"),
                              atol=1e-3)


@pytest.mark.parametrize("make", ["parallel", "parallel-shared", "recurrent"])
def test_gradcheck_in_float64(make):
    torch.manual_seed(0)
    if make == "recurrent":
        module = ts.RecurrentTransformer(_loc(size=6), "attention", 2, loc_features=8,
                                         backend="torch")
    else:
        module = ts.ParallelTransformer(2, "affine", localization=_loc(size=6),
                                        shared_localization=make == "parallel-shared",
                                        loc_features=8, init="tile", backend="torch")
    module = _randomize_heads(module, scale=0.2).double()
    x = _x(2, size=6, dtype=torch.float64).requires_grad_(True)
    weights = [p for p in module.parameters()][:2]
    assert torch.autograd.gradcheck(lambda x, *w: module(x), (x, *weights))


def test_gradients_through_two_transformers_in_series_on_feature_maps():
    """The SVHN Multi layout: a transformer before each of two convolution layers."""
    torch.manual_seed(0)
    model = nn.Sequential(
        ts.SpatialTransformer(_loc(1, 6), "affine", loc_features=8, backend="torch"),
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(),
        ts.SpatialTransformer(_loc(2, 6), "affine", loc_features=8, backend="torch"),
        nn.Conv2d(2, 1, 3, padding=1),
    )
    model = _randomize_heads(model, scale=0.2).double()
    x = _x(2, size=6, dtype=torch.float64).requires_grad_(True)
    second_head = model[3].head.weight
    assert torch.autograd.gradcheck(lambda x, w: model(x), (x, second_head))
    model(x).sum().backward()
    assert all(stn.localization[1].weight.grad.abs().sum() > 0
               for stn in ts.find_transformers(model))


def test_find_transformers_and_the_optimizer_groups_see_the_new_modules():
    pt = ts.ParallelTransformer(2, "affine", in_channels=1)
    shared = ts.ParallelTransformer(2, "affine", in_channels=1, shared_localization=True)
    rt = ts.RecurrentTransformer(None, "affine", 2, in_channels=1)
    model = nn.Sequential(pt, nn.Conv2d(2, 1, 1), shared, nn.Conv2d(2, 1, 1), rt,
                          nn.Flatten(), nn.LazyLinear(3))
    assert ts.find_transformers(model) == [pt, shared, rt]
    model(torch.rand(1, 1, 8, 8))
    groups = parameter_groups(model, 0.1)
    ids = {id(p) for p in groups[1]["params"]}
    assert ids == {id(p) for m in (pt, shared, rt) for p in m.parameters()}


@pytest.mark.parametrize("make", ["parallel", "parallel-shared", "recurrent"])
def test_compile_fullgraph_and_export_with_a_dynamic_batch(make):
    if make == "recurrent":
        module = ts.RecurrentTransformer(_loc(), "affine", 2, loc_features=8)
    else:
        module = ts.ParallelTransformer(2, "affine", localization=_loc(), loc_features=8,
                                        shared_localization=make == "parallel-shared")
    module = _randomize_heads(module, scale=0.2)
    x = _x(3)
    eager = module(x)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager, atol=1e-6, rtol=0)
    program = torch.export.export(module, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
    x5 = _x(5, seed=7)
    torch.testing.assert_close(program.module()(x5), module(x5), atol=1e-6, rtol=0)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from torchstn.export import export_onnx

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.pt = ts.ParallelTransformer(2, "attention", localization=_loc(),
                                             loc_features=8, init="tile")
            self.rt = ts.RecurrentTransformer(_loc(), "projective", 2, loc_features=8)

        def forward(self, x):
            return self.pt(x), self.rt(x)

    model = _randomize_heads(Both(), scale=0.2).eval()
    path = export_onnx(model, (_x(3),), tmp_path / "m.onnx")
    x5 = _x(5, seed=8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x5.numpy()})
    for a, b in zip(got, model(x5)):
        torch.testing.assert_close(torch.from_numpy(a), b.detach(), atol=1e-5, rtol=0)


class _Index(nn.Module):
    """Features that ignore the image: its index in the batch."""

    out_features = 1

    def forward(self, x):
        return torch.arange(len(x), dtype=x.dtype, device=x.device).view(-1, 1)


def test_a_projective_product_that_cannot_be_normalised_keeps_that_images_transform():
    rt = ts.RecurrentTransformer(_Index(), "projective", 2, backend="torch")
    with torch.no_grad():  # M = [[1, 0, 0], [0, 1, s], [0, -2, 1]]; (M @ M)[2, 2] = 1 - 2 s
        rt.heads[0].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0.25, 0, -2]))
        rt.heads[0].weight[5, 0] = 0.75  # image 0: s = 0.25 (fine); image 1: s = 1 (w < 0)
    x = _x(2)
    params = rt.parameters_of(x, every_step=True)
    assert torch.isfinite(params[0]).all()
    out = rt(x)
    assert torch.isfinite(params[1]).all() and torch.isfinite(out).all()
    # Image 0 composed its update; image 1 could not and kept its first transform.
    product = ts.get_transform("projective").compose(params[0][:1], params[0][:1])
    torch.testing.assert_close(params[1][0], product[0])
    assert torch.equal(params[1][1], params[0][1])
    with pytest.raises(ValueError, match="m22 <= 0 for batch entries \\[1\\]"):
        ts.get_transform("projective").compose(params[0], params[0])  # the public one checks


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        ts.ParallelTransformer(0, in_channels=1)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 2.0"):
        ts.ParallelTransformer(2.0, in_channels=1)
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        ts.RecurrentTransformer(None, "affine", 0, in_channels=1)
    with pytest.raises(ValueError, match="transform 'tps' cannot compose"):
        ts.RecurrentTransformer(None, "tps", 2, in_channels=1)
    with pytest.raises(ValueError, match=r"init must be .* shape \(2, 6\) .* got shape \(2, 3\)"):
        ts.ParallelTransformer(2, "affine", in_channels=1, init=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="init must be one of"):
        ts.ParallelTransformer(2, "affine", in_channels=1, init="spread")
    with pytest.raises(ValueError, match="transform 'rotation' cannot"):
        ts.ParallelTransformer(2, "rotation", in_channels=1, init="tile")
    with pytest.raises(ValueError, match="output must be one of"):
        ts.ParallelTransformer(2, in_channels=1, output="stack")
    with pytest.raises(ValueError, match="in_channels is required"):
        ts.RecurrentTransformer(None, "affine", 2)
    mixed = [ts.SpatialTransformer(None, "affine", in_channels=1, out_size=size)
             for size in ((8, 8), (6, 6))]
    with pytest.raises(ValueError, match="output='concat' needs one out_size"):
        ts.ParallelTransformer.from_transformers(mixed)
    assert [o.shape[-1] for o in ts.ParallelTransformer.from_transformers(
        mixed, output="list")(_x())] == [8, 6]
    net = _loc()
    with pytest.raises(ValueError, match="returned the same module twice"):
        ts.ParallelTransformer(2, localization=lambda: net, loc_features=8)
    with pytest.raises(ValueError, match="mode must be one of"):
        ts.RecurrentTransformer(None, "affine", 2, in_channels=1, mode="cubic")
    # Localisation outputs of the wrong size name what was expected.
    for module in (ts.ParallelTransformer(2, localization=_loc(features=5), loc_features=8),
                   ts.ParallelTransformer(2, localization=_loc(features=5), loc_features=8,
                                          shared_localization=True),
                   ts.RecurrentTransformer(_loc(features=5), "affine", 2, loc_features=8)):
        with pytest.raises(ValueError, match="returned 5 features per image but the "
                                             "regression head expects loc_features = 8"):
            module(_x())
    with pytest.raises(ValueError, match="input has 3 channels but the default localization"):
        ts.RecurrentTransformer(None, "affine", 2, in_channels=1)(_x(c=3))


def test_every_step_sees_loc_size_and_composition_stays_float32_under_autocast():
    sizes = []

    class Record(nn.Module):
        out_features = 4

        def forward(self, x):
            sizes.append(tuple(x.shape[-2:]))
            return x.flatten(1)[:, :4]

    rt = ts.RecurrentTransformer(Record(), "affine", 3, loc_size=(8, 8), backend="torch")
    rt(_x(2, size=12))
    assert sizes == [(8, 8)] * 3
    rt = _randomize_heads(ts.RecurrentTransformer(_loc(), "affine", 3, loc_features=8,
                                                  backend="torch"), scale=0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        steps = rt.parameters_of(_x(2), every_step=True)
    assert steps[0].dtype == torch.bfloat16  # the head's output, as autocast gives it
    assert steps[1].dtype == steps[2].dtype == torch.float32
