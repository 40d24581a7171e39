"""Temporal filters for per-frame landmark tracks: the conventional baselines RwR is compared against."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ema", "one_euro"]


def ema(track: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average over frames of ``track`` (frames, ...): y_t = α x_t + (1 − α) y_{t−1}."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    out = np.array(track, np.float64, copy=True)
    for t in range(1, len(out)):
        out[t] = alpha * out[t] + (1 - alpha) * out[t - 1]
    return out


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


def one_euro(track: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez et al. 2012) over frames, per coordinate: the cutoff rises with speed.

    Args:
        track: (frames, ...) positions.
        fps: frame rate (dt = 1 / fps).
        min_cutoff: cutoff frequency (Hz) at rest; lower = smoother.
        beta: speed coefficient; higher = less lag on fast motion.
        d_cutoff: cutoff for the derivative estimate.
    """
    x = np.asarray(track, np.float64)
    dt = 1.0 / fps
    out = np.empty_like(x)
    out[0] = x[0]
    dx_prev = np.zeros_like(x[0])
    for t in range(1, len(x)):
        dx = (x[t] - out[t - 1]) / dt
        a_d = _alpha(d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * np.abs(dx_hat)
        a = _alpha(cutoff, dt)
        out[t] = a * x[t] + (1 - a) * out[t - 1]
        dx_prev = dx_hat
    return out
