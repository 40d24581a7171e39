import argparse

import numpy as np
import pytest
import torch

from ldeq.config import LDEQConfig, get_config
from ldeq.crop import crop_transform, from_crop, to_crop
from ldeq.model import LDEQ, load_official_state_dict, normalize_heatmaps, soft_argmax
from ldeq.solvers import anderson, fixed_point_iteration


def test_paper_configuration_has_the_published_parameter_count():
    model = LDEQ(get_config("paper"))
    stem = sum(p.numel() for p in model.tail.parameters())
    cell = sum(p.numel() for p in model.deq_layer.cell.parameters())
    assert (stem, cell) == (403_128, 21_422_018)


def test_normalisation_peaks_at_one():
    h = torch.randn(2, 3, 8, 8) * 5
    z = normalize_heatmaps(h, beta=0.3)
    assert torch.allclose(z.flatten(2).amax(-1), torch.ones(2, 3))
    assert (z > 0).all()


def test_soft_argmax_of_a_delta_has_no_half_pixel_offset():
    z = torch.zeros(1, 2, 64, 64)
    z[0, 0, 10, 20] = 1.0  # row 10, col 20
    z[0, 1, 63, 0] = 1.0
    xy, sigma = soft_argmax(z)
    assert torch.allclose(xy[0, 0], torch.tensor([20 / 64, 10 / 64]), atol=1e-4)
    assert torch.allclose(xy[0, 1], torch.tensor([0.0, 63 / 64]), atol=1e-4)
    assert (sigma < 0.01).all()  # only the 1e-4 in the released normaliser keeps it off zero


def linear_map(dim: int, seed: int = 0, contraction: float = 0.9):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = contraction * a / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(2, dim, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    return (lambda z: z @ a.T + b), exact


def test_fpi_converges_on_a_contraction():
    f, exact = linear_map(20, contraction=0.5)
    z, info = fixed_point_iteration(f, torch.zeros_like(exact), max_iters=200, tol=1e-10)
    assert torch.allclose(z, exact, atol=1e-8)
    assert info.calls < 200 and info.residual < 1e-10


def test_anderson_beats_fpi_at_equal_budget():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0, 0.98, 30, dtype=torch.float64)) @ q.T  # slow for plain iteration
    b = torch.randn(2, 30, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(30, dtype=torch.float64) - a, b.T).T

    def f(z):
        return z @ a.T + b

    z_fpi, _ = fixed_point_iteration(f, torch.zeros_like(exact), max_iters=20, tol=0.0)
    z_and, info = anderson(f, torch.zeros_like(exact), max_iters=18, tol=0.0, m=6, lam=1e-8)
    assert info.calls == 20
    assert (z_and - exact).norm() < 0.1 * (z_fpi - exact).norm()


def test_anderson_returns_the_lowest_residual_iterate():
    f, exact = linear_map(10, contraction=0.9)
    _, info = anderson(f, torch.zeros_like(exact), max_iters=8, tol=0.0, m=3)
    assert info.residual == min(info.trace)


@pytest.mark.parametrize("grad", ["phantom", "jfb", "implicit", "unrolled"])
def test_every_gradient_mode_reaches_stem_and_cell(grad):
    torch.manual_seed(0)
    model = LDEQ(get_config("tiny")).train()
    out = model(torch.randn(2, 3, 64, 64), grad=grad)
    out.landmarks.sum().backward()
    assert model.tail[0].conv.weight.grad.abs().sum() > 0
    assert model.deq_layer.cell.head.weight.grad.abs().sum() > 0


def test_jfb_gradient_equals_one_tracked_step():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = LDEQ(cfg).train()
    images = torch.randn(1, 3, 64, 64)
    model(images, grad="jfb").landmarks.sum().backward()
    grad_jfb = model.deq_layer.cell.head.weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        x = model.inject(images)
        from ldeq.solvers import solve
        z_star, _ = solve(lambda z: model.deq_layer.cell(z, x), model.zeros(x), cfg.solver, cfg.max_iters, cfg.tol)
    z = model.deq_layer.cell(z_star, model.inject(images))
    soft_argmax(z)[0].sum().backward()
    assert torch.allclose(grad_jfb, model.deq_layer.cell.head.weight.grad, atol=1e-6)


def test_inference_uses_solver_plus_extra_step():
    model = LDEQ(get_config("tiny", solver="fpi", max_iters=3, tol=0.0)).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out.info.calls == 4
    out = LDEQ(get_config("tiny", solver="anderson", max_iters=3, tol=0.0)).eval()(torch.randn(1, 3, 64, 64))
    assert out.info.calls == 2 + 3 + 1


def test_official_state_dict_loads_with_weights_only(tmp_path):
    cfg = get_config("tiny")
    source = LDEQ(cfg)
    path = tmp_path / "official.pth.tar"
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(beta=0.3)}, path)
    target = LDEQ(cfg)
    load_official_state_dict(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])
    torch.save({"state_dict": {"tail.0.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises((KeyError, RuntimeError)):
        load_official_state_dict(LDEQ(cfg), path)


def test_config_json_roundtrip(tmp_path):
    cfg = get_config("demo", epochs=3)
    cfg.to_json(tmp_path / "c.json")
    assert LDEQConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(KeyError):
        get_config("nope")


def test_crop_transform_roundtrip_and_centre():
    affine = crop_transform(np.array([100, 50, 199, 149]), 256)
    centre = to_crop(np.array([[150.0, 100.0]]), affine)
    assert np.allclose(centre, [[256 / 2, 256 / 2]])
    pts = np.random.default_rng(0).random((98, 2)) * 300
    assert np.allclose(from_crop(to_crop(pts, affine), affine), pts)
    assert np.isclose(affine[0, 0], 256 / (1.2 * 99))
