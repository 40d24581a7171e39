"""Batched fixed-point solvers for z* = f(z): plain fixed-point iteration and Anderson acceleration.

Both follow the released LDEQ code: residuals are batch means of per-sample relative residuals, fpi returns its last
iterate, Anderson returns the lowest-residual iterate it has seen. Solvers run without autograd; gradients are the
job of :mod:`ldeq.deq`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["SolverInfo", "fixed_point_iteration", "anderson", "solve"]

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolverInfo:
    """What a solve did: number of f calls, final relative residual (batch mean), residual trace."""

    calls: int = 0
    residual: float = float("inf")
    trace: list[float] = field(default_factory=list)


def _relative(diff: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖diff‖ / (1e-5 + ‖ref‖) over all non-batch dims."""
    return diff.flatten(1).norm(dim=1) / (1e-5 + ref.flatten(1).norm(dim=1))


@torch.no_grad()
def fixed_point_iteration(f: Fn, z0: torch.Tensor, max_iters: int, tol: float) -> tuple[torch.Tensor, SolverInfo]:
    """z_{k+1} = f(z_k) until the mean relative step ``‖z_{k+1} − z_k‖ / ‖z_{k+1}‖`` drops below ``tol``."""
    info = SolverInfo()
    z = z0
    for _ in range(max_iters):
        nxt = f(z)
        info.calls += 1
        res = float(_relative(nxt - z, nxt).mean())
        info.trace.append(res)
        info.residual = res
        z = nxt
        if res < tol:
            break
    return z, info


@torch.no_grad()
def anderson(f: Fn, z0: torch.Tensor, max_iters: int, tol: float, m: int = 6, lam: float = 1e-4,
             mixing: float = 1.0) -> tuple[torch.Tensor, SolverInfo]:
    """Anderson acceleration with memory ``m`` and Tikhonov term ``lam``; returns the lowest-residual iterate.

    Calls f on z0 and f(z0) first, then up to ``max_iters`` accelerated steps (one call each).
    """
    bsz, shape = z0.shape[0], z0.shape
    flat = z0.reshape(bsz, -1)
    dim = flat.shape[1]
    xs = flat.new_zeros(bsz, m, dim)
    fs = flat.new_zeros(bsz, m, dim)
    info = SolverInfo()

    def call(v: torch.Tensor) -> torch.Tensor:
        info.calls += 1
        return f(v.reshape(shape)).reshape(bsz, -1)

    xs[:, 0], fs[:, 0] = flat, call(flat)
    xs[:, 1], fs[:, 1] = fs[:, 0], call(fs[:, 0])
    h = flat.new_zeros(bsz, m + 1, m + 1)
    h[:, 0, 1:] = h[:, 1:, 0] = 1
    y = flat.new_zeros(bsz, m + 1, 1)
    y[:, 0] = 1
    best, best_res = xs[:, 1].clone(), float("inf")
    for k in range(2, max_iters + 2):
        n = min(k, m)
        g = fs[:, :n] - xs[:, :n]
        h[:, 1 : n + 1, 1 : n + 1] = g @ g.transpose(1, 2) + lam * torch.eye(n, dtype=flat.dtype, device=flat.device)
        alpha = torch.linalg.solve(h[:, : n + 1, : n + 1], y[:, : n + 1])[:, 1 : n + 1, 0]
        nxt = mixing * (alpha[:, None] @ fs[:, :n])[:, 0] + (1 - mixing) * (alpha[:, None] @ xs[:, :n])[:, 0]
        xs[:, k % m] = nxt
        fs[:, k % m] = call(nxt)
        res = float(_relative(fs[:, k % m] - xs[:, k % m], fs[:, k % m]).mean())
        info.trace.append(res)
        if res < best_res:
            best, best_res = xs[:, k % m].clone(), res
        if res < tol:
            break
    info.residual = best_res
    return best.reshape(shape), info


def solve(f: Fn, z0: torch.Tensor, solver: str, max_iters: int, tol: float, m: int = 6, lam: float = 1e-4,
          mixing: float = 1.0) -> tuple[torch.Tensor, SolverInfo]:
    """Dispatch to the named solver (``"fpi"`` or ``"anderson"``)."""
    if solver == "fpi":
        return fixed_point_iteration(f, z0, max_iters, tol)
    if solver == "anderson":
        return anderson(f, z0, max_iters, tol, m, lam, mixing)
    raise ValueError(f"unknown solver {solver!r}; use 'fpi' or 'anderson'")
