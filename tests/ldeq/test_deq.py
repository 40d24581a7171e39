import pytest
import torch

from ldeq.config import get_config
from ldeq.deq import solve_equilibrium
from ldeq.model import LDEQ, soft_argmax
from ldeq.solvers import solve


class LinearCell(torch.nn.Module):
    """f(z, x) = z Aᵀ + x Wᵀ with ‖A‖₂ = ``contraction``: its equilibrium z* = x Wᵀ (I − Aᵀ)⁻¹ is known in closed
    form, and so is the exact gradient of anything computed from it."""

    def __init__(self, dim: int, contraction: float, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        self.a = torch.nn.Parameter(contraction * a / torch.linalg.matrix_norm(a, ord=2))
        self.w = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T + x @ self.w.T

    def closed_form(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.a.shape[0], dtype=self.a.dtype)
        return torch.linalg.solve(eye - self.a, (x @ self.w.T).T).T


def test_implicit_gradient_equals_the_exact_gradient_on_a_linear_contraction():
    dim = 12
    cell = LinearCell(dim, contraction=0.8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, dim, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, dim, generator=g, dtype=torch.float64)  # loss = Σ weights · z*
    cfg = get_config("tiny", solver="fpi", max_iters=400, tol=1e-14, extra_step=False, implicit_max_iters=400)

    z, _ = solve_equilibrium(cell, cfg, x, torch.zeros(3, dim, dtype=torch.float64), training=True, grad="implicit")
    (weights * z).sum().backward()
    implicit = [cell.a.grad.clone(), cell.w.grad.clone(), x.grad.clone()]

    cell.zero_grad()
    x.grad = None
    (weights * cell.closed_form(x)).sum().backward()  # autograd through the linear solve: the exact gradient
    exact = [cell.a.grad, cell.w.grad, x.grad]
    for got, want in zip(implicit, exact):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-10)

    cell.zero_grad()
    z, _ = solve_equilibrium(cell, cfg, x.detach(), torch.zeros(3, dim, dtype=torch.float64), training=True,
                             grad="jfb")
    (weights * z).sum().backward()
    assert not torch.allclose(cell.w.grad, exact[1], rtol=1e-3)  # one step is not the exact gradient: the check bites


@pytest.mark.parametrize("grad", ["phantom", "jfb", "implicit", "unrolled"])
def test_every_gradient_mode_reaches_stem_and_cell(grad):
    torch.manual_seed(0)
    model = LDEQ(get_config("tiny")).train()
    out = model(torch.randn(2, 3, 64, 64), grad=grad)
    out.landmarks.sum().backward()
    assert model.tail[0].conv.weight.grad.abs().sum() > 0
    assert model.deq_layer.cell.head.conv.weight.grad.abs().sum() > 0


def test_jfb_gradient_equals_one_tracked_step():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = LDEQ(cfg).train()
    images = torch.randn(1, 3, 64, 64)
    model(images, grad="jfb").landmarks.sum().backward()
    grad_jfb = model.deq_layer.cell.head.conv.weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        x = model.inject(images)
        z_star, _ = solve(lambda z: model.deq_layer.cell(z, x), model.zeros(x), cfg.solver, cfg.max_iters, cfg.tol)
    z = model.deq_layer.cell(z_star, model.inject(images))
    soft_argmax(z)[0].sum().backward()
    assert torch.allclose(grad_jfb, model.deq_layer.cell.head.conv.weight.grad, atol=1e-6)


def test_inference_uses_solver_plus_extra_step():
    model = LDEQ(get_config("tiny", solver="fpi", max_iters=3, tol=0.0)).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out.info.calls == 4
    out = LDEQ(get_config("tiny", solver="anderson", max_iters=3, tol=0.0)).eval()(torch.randn(1, 3, 64, 64))
    assert out.info.calls == 2 + 3 + 1
    out = LDEQ(get_config("tiny", solver="fpi", max_iters=3, tol=0.0, extra_step=False)).eval()(
        torch.randn(1, 3, 64, 64))
    assert out.info.calls == 3  # the released take_one_less_inference_step


def test_proximal_rwr_pulls_towards_the_previous_equilibrium():
    torch.manual_seed(0)
    model = LDEQ(get_config("tiny", tol=0.0)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        previous = model(images[:1]).z
        free = model(images[1:], z0=previous, max_iters=1)
        anchored = model(images[1:], z0=previous, max_iters=1, anchor=previous, gamma=4.0)
    assert (anchored.z - previous).norm() < (free.z - previous).norm()
    assert torch.allclose(model(images[1:], z0=previous, max_iters=1, anchor=previous, gamma=0.0).z, free.z)
