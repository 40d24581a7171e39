"""Combining several models' WFLW-98 predictions: family-weighted consensus and disagreement."""

from __future__ import annotations

import numpy as np

from ldeq.wflw import INTEROCULAR

__all__ = ["consensus", "disagreement"]


def consensus(points: np.ndarray, masks: np.ndarray, families: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Average models' points per WFLW point, giving each *family* one vote.

    Args:
        points: (M, 98, 2) per-model WFLW-98 points (NaN where undefined).
        masks: (M, 98) True where a model defines the point.
        families: family of each model; models of one family share errors, so they are averaged first.

    Returns:
        Consensus points (98, 2) (NaN where no model defines the point) and the number of families per point (98,).
    """
    per_family = []
    for fam in dict.fromkeys(families):
        idx = [i for i, f in enumerate(families) if f == fam]
        per_family.append(_masked_mean(points[idx], masks[idx]))
    fam_points = np.stack(per_family)
    fam_masks = np.isfinite(fam_points[..., 0])
    return _masked_mean(fam_points, fam_masks).astype(np.float32), fam_masks.sum(axis=0).astype(np.int16)


def _masked_mean(points: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of ``points`` (N, P, 2) where ``masks`` (N, P); NaN where no entry is valid."""
    count = masks.sum(axis=0)
    total = np.where(masks[..., None], np.nan_to_num(points), 0.0).sum(axis=0)
    return np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], np.nan)


def disagreement(points: np.ndarray, masks: np.ndarray, centre: np.ndarray, votes: np.ndarray) -> float:
    """Mean distance of each model's points to the consensus over points with >= 2 votes, / inter-ocular distance.

    Returns NaN when no point has two votes or the consensus eye corners are undefined.
    """
    shared = votes >= 2
    a, b = INTEROCULAR
    scale = float(np.linalg.norm(centre[a] - centre[b]))
    if not shared.any() or not np.isfinite(scale) or scale <= 0:
        return float("nan")
    dists = np.linalg.norm(points - centre[None], axis=-1)  # (M, 98)
    use = masks & shared[None]
    return float(dists[use].mean() / scale)
