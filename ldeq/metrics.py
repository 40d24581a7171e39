"""Landmark metrics as plain functions on numpy arrays, exactly as the LDEQ evaluation defines them.

* :func:`nme`: per-image NME, inter-ocular (WFLW outer eye corners 60 and 72).
* :func:`fr_auc`: failure rate and AUC of the CED curve up to a threshold (Simpson's rule).
* :func:`video_nme`: one video's NME ×100, averaged over landmarks then frames.
* :func:`nmf`: one video's normalised mean flicker (the code's ``video_NMJ``).
* :func:`face_size`, :func:`nme_face_size`: NME normalised by the face size, √(width · height) of the true shape's
  bounding box (the normaliser NMF uses, without its 1/256).
* :func:`nad`: one video's normalised Allan deviation NAD(τ) of the landmark errors, a stability curve over
  averaging lengths τ; NAD(1) = NMF/√2 where the face size is constant.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import simpson

from ldeq.wflw import INTEROCULAR, interocular

__all__ = ["nme", "fr_auc", "ced", "video_nme", "nmf", "acceleration_error", "face_size", "nme_face_size",
           "nad"]


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


def face_size(gt: np.ndarray) -> np.ndarray:
    """√((max x − min x)(max y − min y)) of each true shape (..., L, 2): the face-size normaliser (pixels)."""
    span = np.asarray(gt, np.float64).max(axis=-2) - np.asarray(gt, np.float64).min(axis=-2)
    return np.sqrt(span[..., 0] * span[..., 1])


def nme_face_size(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image NME (N,) normalised by :func:`face_size` of the true shape (a fraction; ×100 for percent)."""
    pred, gt = _check(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) / face_size(gt)


def nad(pred: np.ndarray, gt: np.ndarray, taus: np.ndarray | list[int]) -> np.ndarray:
    """Normalised Allan deviation of one video's landmark errors at each averaging length τ (frames), (len(taus),).

    The error of frame n, u_n = 100 (p_n − g_n) / d_n, is in NMF's units (d_n = √(span_x · span_y / 256²) of frame
    n's true shape), so real head motion, which the labels follow, is not counted. With ū_t(τ) the mean of
    u_t … u_{t+τ−1}, the overlapping Allan variance is ½ · mean over t and landmarks of ‖ū_{t+τ} − ū_t‖², and NAD(τ)
    its square root. NAD(1) is the root mean square frame-to-frame change over √2, i.e. NMF/√2 where d is constant;
    larger τ show whether the error wanders slowly (drift: NAD grows or stays) or only flickers (white jitter: NAD
    falls as 1/√τ). NaN where the video has fewer than 2τ frames.
    """
    pred, gt = _check(pred, gt)
    span = gt.max(axis=1) - gt.min(axis=1)
    scale = np.sqrt(span[:, 0] * span[:, 1] / 256.0**2)
    err = 100 * (pred - gt) / scale[:, None, None]
    cumulative = np.concatenate([np.zeros((1, *err.shape[1:])), np.cumsum(err, axis=0)])
    out = np.full(len(taus), np.nan)
    for k, tau in enumerate(int(t) for t in taus):
        if tau < 1:
            raise ValueError(f"NAD: averaging length {tau} must be >= 1 frame")
        if len(err) < 2 * tau:
            continue
        means = (cumulative[tau:] - cumulative[:-tau]) / tau  # ū_t for t = 0 … F − τ
        diff = means[tau:] - means[:-tau]
        out[k] = np.sqrt(0.5 * np.mean(np.sum(diff**2, axis=-1)))
    return out
