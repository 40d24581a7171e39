"""Equilibrium forward pass with selectable training gradients.

* ``phantom`` (default): solve without a graph, then unroll ``phantom_steps`` damped steps
  z ← (1 − τ) z + τ f(z) from the detached equilibrium and backpropagate through those only.
* ``jfb``: Jacobian-free backprop, one tracked step f(z*).
* ``implicit``: one tracked step, with a backward hook that solves the adjoint fixed point
  y = (∂f/∂z)ᵀ y + g by fixed-point iteration (implicit-function-theorem gradient).
* ``unrolled``: plain backprop through every solver iteration, kept only as a memory contrast.

All modes but ``unrolled`` keep training memory independent of the number of solver iterations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ldeq.config import LDEQConfig
from ldeq.solvers import SolverInfo, solve

__all__ = ["solve_equilibrium", "GRAD_MODES"]

GRAD_MODES = ("phantom", "jfb", "implicit", "unrolled")


def solve_equilibrium(cell: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], cfg: LDEQConfig, x: torch.Tensor,
                      z0: torch.Tensor, *, training: bool, max_iters: int | None = None, grad: str | None = None,
                      anchor: torch.Tensor | None = None, gamma: float = 0.0,
                      solver: str | None = None) -> tuple[torch.Tensor, SolverInfo]:
    """The equilibrium z = cell(z, x) (after the extra step) and solver info, for any cell.

    Solver, tolerance, extra step and gradient settings come from ``cfg``; gradients are tracked when ``training``
    and autograd is on. With an ``anchor`` and ``gamma > 0`` the map becomes the proximal one,
    (f(z) + γ·anchor) / (1 + γ), whose fixed point solves min ‖z − f(z)‖² + γ‖z − anchor‖² to first order: RwR's
    constrained reading of the DEQ. ``solver`` overrides ``cfg.solver`` (RwR's warm steps are plain fixed-point steps:
    1 + 1 calls per frame).
    """
    iters = cfg.max_iters if max_iters is None else max_iters
    grad = grad or cfg.grad
    if grad not in GRAD_MODES:
        raise ValueError(f"unknown gradient mode {grad!r}; choose from {GRAD_MODES}")
    prox_anchor = anchor if gamma > 0 else None  # None: the plain map f(z)

    def cell_map(z: torch.Tensor, inj: torch.Tensor) -> torch.Tensor:
        fz = cell(z, inj)
        return (fz + gamma * prox_anchor) / (1 + gamma) if prox_anchor is not None else fz

    def f(z: torch.Tensor) -> torch.Tensor:
        return cell_map(z, x)

    tracking = torch.is_grad_enabled() and training
    if tracking and grad == "unrolled":
        z, info = z0, SolverInfo()
        for _ in range(iters + int(cfg.extra_step)):
            z = f(z)
            info.calls += 1
        return z, info

    x_solve = x.detach()
    z_star, info = solve(lambda z: cell_map(z, x_solve), z0.detach(), solver or cfg.solver, iters, cfg.tol,
                         cfg.anderson_m, cfg.anderson_lam, cfg.anderson_mixing)
    if not tracking:
        if cfg.extra_step:
            with torch.no_grad():
                z_star = f(z_star)
            info.calls += 1
        return z_star, info

    if grad == "phantom":
        z = z_star
        for _ in range(cfg.phantom_steps):
            z = (1 - cfg.phantom_tau) * z + cfg.phantom_tau * f(z)
        return z, info
    if grad == "jfb":
        return f(z_star), info
    # implicit
    z_req = z_star.clone().requires_grad_()
    fz = f(z_req)
    out = fz.detach().requires_grad_()  # the value f(z*); its gradient is rewritten by the hook below

    def adjoint(g: torch.Tensor) -> torch.Tensor:
        y = g
        for _ in range(cfg.implicit_max_iters):
            (jt_y,) = torch.autograd.grad(fz, z_req, y, retain_graph=True)
            y_next = jt_y + g
            if (y_next - y).norm() / (1e-8 + y_next.norm()) < cfg.tol:
                y = y_next
                break
            y = y_next
        return y

    class _Implicit(torch.autograd.Function):
        @staticmethod
        def forward(ctx: torch.autograd.function.FunctionCtx, value: torch.Tensor) -> torch.Tensor:
            return value.clone()

        @staticmethod
        def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
            y = adjoint(g)
            torch.autograd.backward(fz, y)  # sends (I − J)^-T g into the parameters via f(z*, x)
            return torch.zeros_like(g)

    return _Implicit.apply(out), info
