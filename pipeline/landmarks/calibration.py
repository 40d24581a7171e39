"""Offline calibration of the robust consensus: the per-family offsets and per-region weights in ``weights.json``.

Used by ``benchmarks/label_quality.py`` only, never by a stage: the stages read the fitted values
(:func:`pipeline.landmarks.consensus.load_consensus_model`), so changing how they are fitted re-runs nothing.
"""

from __future__ import annotations

import numpy as np

from ldeq.wflw import interocular
from pipeline.landmarks.consensus import ConsensusModel, face_frames, robust_consensus
from pipeline.landmarks.schemes import REGIONS

__all__ = ["fit_offsets", "fit_weights", "leave_one_out"]

#: Brow points that iBUG-68 models lack (lower edges) → the upper-edge points of the same brow.
_BROW_UPPER = {range(38, 42): range(33, 38), range(47, 51): range(42, 47)}


def fit_offsets(points: np.ndarray, families: list[str], anchors: list[str],
                min_frames: int = 10) -> dict[str, np.ndarray]:
    """Each non-anchor family's systematic offset from the anchor families, without ground truth.

    ``points`` (F, K, 98, 2) are family points on any frames (unlabelled video is enough). Anchors are families
    trained on human annotations of the target convention (dlib's and face-api's iBUG-68 models); the offset of
    family g at point p is the median over frames of ``g − mean(anchors)`` in each frame's face frame (x along the
    anchors' eye line, inter-ocular units). Points no anchor defines (the lower brow edges) take the mean offset of
    the upper edge of the same brow, as a brow moves as one. Anchors get no offset.
    """
    anchor_idx = [k for k, f in enumerate(families) if f in anchors]
    if not anchor_idx:
        raise ValueError(f"none of the anchor families {anchors} is among {families}")
    ref = np.nanmean(points[:, anchor_idx], axis=1)  # (F, 98, 2)
    ex, ey = face_frames(ref)
    norm2 = (ex**2).sum(axis=1)
    out: dict[str, np.ndarray] = {}
    for k, fam in enumerate(families):
        if k in anchor_idx:
            continue
        d = points[:, k] - ref
        local = np.stack([(d * ex[:, None]).sum(-1), (d * ey[:, None]).sum(-1)], axis=-1) / norm2[:, None, None]
        ok = np.isfinite(local).all(axis=-1)
        offset = np.zeros((98, 2))
        for p in range(98):
            if ok[:, p].sum() >= min_frames:
                offset[p] = np.median(local[ok[:, p], p], axis=0)
        for lower, upper in _BROW_UPPER.items():
            unmeasured = [p for p in lower if ok[:, p].sum() < min_frames]
            if unmeasured:
                offset[unmeasured] = offset[list(upper)].mean(axis=0)
        out[fam] = offset
    return out


def leave_one_out(points: np.ndarray, families: list[str], model: ConsensusModel) -> np.ndarray:
    """Per family, the robust consensus of the *other* families (F, K, 98, 2): a reference without ground truth
    against which each family can be scored (agreement between independent families)."""
    out = np.full(points.shape, np.nan)
    for k in range(len(families)):
        others = [i for i in range(len(families)) if i != k]
        out[:, k] = robust_consensus(points[:, others], [families[i] for i in others], model).points
    return out


def fit_weights(points: np.ndarray, families: list[str], truth: np.ndarray, groups: np.ndarray | None = None,
                floor: float = 0.02) -> dict[str, tuple[float, ...]]:
    """Per-family, per-region weights ∝ 1 / mean squared error against ``truth`` (F, 98, 2), normalised to max 1.

    ``truth`` may instead be one reference per family (F, K, 98, 2), e.g. :func:`leave_one_out` (no ground truth).
    Errors are in inter-ocular units of the reference. With ``groups`` (F,) (a video id per frame), each family's mean
    error per group and point is removed first, so a weight measures how much a family's labels scatter under
    degradation, not a constant offset of the reference it is compared with. ``floor`` (inter-ocular units) keeps a
    nearly perfect family from taking all the weight.
    """
    regions = list(REGIONS.values())
    raw = np.full((len(families), len(regions)), np.nan)
    for k in range(len(families)):
        ref = truth[:, k] if truth.ndim == 4 else truth
        iod = interocular(ref)
        err = (points[:, k] - ref) / iod[:, None, None]  # (F, 98, 2)
        if groups is not None:
            for g in np.unique(groups):
                sel = groups == g
                err[sel] -= np.nanmean(err[sel], axis=0, keepdims=True)
        sq = (err**2).sum(axis=-1)
        for r, idx in enumerate(regions):
            vals = sq[:, idx]
            if np.isfinite(vals).any():
                raw[k, r] = 1.0 / (np.nanmean(vals) + floor**2)
    top = np.nanmax(raw, axis=0)
    return {fam: tuple(float(v) for v in np.nan_to_num(raw[k] / top, nan=0.0)) for k, fam in enumerate(families)}
