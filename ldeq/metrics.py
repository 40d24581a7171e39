"""Landmark metrics as plain functions on numpy arrays, exactly as the LDEQ evaluation defines them.

* :func:`nme`: per-image NME, inter-ocular (WFLW outer eye corners 60 and 72).
* :func:`fr_auc`: failure rate and AUC of the CED curve up to a threshold (Simpson's rule).
* :func:`video_nme`: one video's NME ×100, averaged over landmarks then frames.
* :func:`nmf`: one video's normalised mean flicker (the code's ``video_NMJ``).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import simpson

from ldeq.wflw import INTEROCULAR, interocular

__all__ = ["nme", "fr_auc", "ced", "video_nme", "nmf", "acceleration_error"]


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (N, L, 2); got {pred.shape} and {gt.shape}")
    return pred, gt


def nme(pred: np.ndarray, gt: np.ndarray, norm_indices: tuple[int, int] = INTEROCULAR) -> np.ndarray:
    """Per-image NME (N,): mean landmark error / ‖gt[a] − gt[b]‖ (a fraction; ×100 for percent)."""
    pred, gt = _check(pred, gt)
    scale = interocular(gt, norm_indices)
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) / scale


def ced(nmes: np.ndarray, threshold: float = 0.1, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds 0, step, ..., threshold and the fraction of NME_i ≤ each."""
    xs = np.arange(0, threshold + step, step)
    nmes = np.asarray(nmes, np.float64)
    return xs, np.array([np.count_nonzero(nmes <= x) for x in xs], np.float64) / len(nmes)


def fr_auc(nmes: np.ndarray, threshold: float = 0.1, step: float = 1e-4) -> tuple[float, float]:
    """(FR, AUC) at ``threshold`` in percent: FR = 1 − CED(threshold); AUC = Simpson ∫ CED / threshold."""
    xs, ys = ced(nmes, threshold, step)
    return float(100 * (1 - ys[-1])), float(100 * simpson(ys, x=xs) / threshold)


def video_nme(pred: np.ndarray, gt: np.ndarray, norm_indices: tuple[int, int] = INTEROCULAR) -> float:
    """One video's NME ×100 (frames, L, 2): per frame and landmark ‖g − p‖ / that frame's inter-ocular."""
    return float(100 * nme(pred, gt, norm_indices).mean())


def nmf(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised mean flicker of one video (frames, L, 2).

    e = g − p; d_n = sqrt((max x − min x)(max y − min y) / 256²) from frame n's GT; for n ≥ 1
    F = 100 ‖e_n − e_{n−1}‖ / d_n; NMF = sqrt(mean_n mean_l F²).
    """
    pred, gt = _check(pred, gt)
    if len(gt) < 2:
        raise ValueError("NMF needs at least two frames")
    err = gt - pred
    span = gt.max(axis=1) - gt.min(axis=1)
    scale = np.sqrt(span[:, 0] * span[:, 1] / 256.0**2)
    flicker = 100 * np.linalg.norm(err[1:] - err[:-1], axis=-1) / scale[1:, None]
    return float(np.sqrt(np.mean(flicker**2)))


def acceleration_error(pred: np.ndarray, gt: np.ndarray, norm_indices: tuple[int, int] = INTEROCULAR) -> float:
    """Mean ‖Δ²p − Δ²g‖ / inter-ocular ×100 (second differences), a flicker measure in the style of VIBE."""
    pred, gt = _check(pred, gt)
    if len(gt) < 3:
        raise ValueError("acceleration error needs at least three frames")
    acc_p = pred[:-2] - 2 * pred[1:-1] + pred[2:]
    acc_g = gt[:-2] - 2 * gt[1:-1] + gt[2:]
    scale = interocular(gt[1:-1], norm_indices)
    return float(100 * (np.linalg.norm(acc_p - acc_g, axis=-1).mean(axis=-1) / scale).mean())
