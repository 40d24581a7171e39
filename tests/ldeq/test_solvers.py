import torch

from ldeq.solvers import anderson, fixed_point_iteration, solve


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


def test_relative_stop_ends_early_and_unknown_solvers_are_refused():
    f, exact = linear_map(10, contraction=0.3)
    _, info = solve(f, torch.zeros_like(exact), "fpi", max_iters=50, tol=1e-4)
    assert info.calls < 50 and info.trace[-1] < 1e-4 <= info.trace[-2]
    try:
        solve(f, exact, "broyden", 5, 1e-4)
    except ValueError as err:
        assert "broyden" in str(err)
    else:
        raise AssertionError("an unknown solver was accepted")
