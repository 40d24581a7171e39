"""Combining several models' WFLW-98 predictions into one label per frame.

Two combiners:

* :func:`consensus` — the plain family mean (each family one equal vote). The demo's stored reference landmarks were
  measured with it (``pipeline/demo/measure_reference.py``), so it stays as it was.
* :func:`robust_consensus` — what the pipeline labels with. Per frame and per point, across *families* (models of
  one family are averaged first: they share errors):

  1. each family's points are corrected by its systematic offset (``offsets``: per family, per point, in a
     face-normalised frame — x along the eye line, units of inter-ocular distance), so that, e.g., a 3D mesh's jaw
     contour votes where an annotator would put the jaw line;
  2. a start value: the weighted coordinate-wise median over families (weighted mean where fewer than 3 families
     define the point);
  3. three reweighting rounds: weight = prior weight of the family in that region (``weights``) × a frame-level
     Cauchy factor on the family's median residual over all its points (a family that lost the face is voted down
     everywhere, also at points where it is the only other voice) × a point-level Cauchy factor.

  It returns the points, the per-point *support* (families within ``agree`` inter-ocular distances of the result)
  and every family's frame-level residual, from which disagreement and validity are derived.

Everything is vectorised over frames: arrays are ``(frames, families, 98, 2)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ldeq.wflw import INTEROCULAR, interocular
from pipeline.landmarks.schemes import REGION_OF_POINT, REGIONS

__all__ = ["consensus", "disagreement", "ConsensusModel", "RobustConsensus", "family_points", "robust_consensus",
           "face_frames", "apply_offsets", "load_consensus_model", "WEIGHTS_FILE"]

#: Per-family, per-region weights and per-family offsets, measured by ``benchmarks/label_quality.py``
#: (:mod:`pipeline.landmarks.calibration`).
WEIGHTS_FILE = Path(__file__).resolve().parent / "weights.json"


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
    scale = float(interocular(centre))
    if not shared.any() or not np.isfinite(scale) or scale <= 0:
        return float("nan")
    dists = np.linalg.norm(points - centre[None], axis=-1)  # (M, 98)
    use = masks & shared[None]
    return float(dists[use].mean() / scale)


@dataclass(frozen=True)
class ConsensusModel:
    """What the robust consensus needs besides the points: prior weights and offsets per family, and its constants.

    Attributes:
        weights: family → weight per region (order of :data:`~pipeline.landmarks.schemes.REGIONS`).
        offsets: family → (98, 2) offset in the face frame (inter-ocular units); subtracted from the family's points.
        default_weight: weight of a family that ``weights`` does not list.
        point_scale: Cauchy scale (inter-ocular units) of the point-level reweighting.
        frame_scale: Cauchy scale of the frame-level reweighting (a family's median residual over its points).
        agree: a family within this distance (inter-ocular units) of the result supports a point; a family whose
            median residual is within it agrees with the frame.
    """

    weights: dict[str, tuple[float, ...]] = field(default_factory=dict)
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    default_weight: float = 1.0
    point_scale: float = 0.08
    frame_scale: float = 0.08
    agree: float = 0.15

    def prior(self, families: list[str]) -> np.ndarray:
        """Prior weight (K, 98) of each family at each WFLW-98 point."""
        out = np.full((len(families), len(REGION_OF_POINT)), self.default_weight, np.float64)
        for k, fam in enumerate(families):
            if fam in self.weights:
                out[k] = np.asarray(self.weights[fam], np.float64)[REGION_OF_POINT]
        return out


@cache
def load_consensus_model(path: Path = WEIGHTS_FILE, use_offsets: bool = True) -> ConsensusModel:
    """The consensus model stored in ``weights.json`` (weights per family and region, offsets per family)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    regions = list(REGIONS)
    if data["regions"] != regions:
        raise ValueError(f"{path}: regions {data['regions']} differ from {regions}")
    weights = {fam: tuple(float(w) for w in ws) for fam, ws in data["weights"].items()}
    offsets = {fam: np.asarray(o, np.float64).reshape(98, 2) for fam, o in data["offsets"].items()} \
        if use_offsets else {}
    const = data["constants"]
    return ConsensusModel(weights, offsets, float(data["default_weight"]), float(const["point_scale"]),
                          float(const["frame_scale"]), float(const["agree"]))


@dataclass(frozen=True)
class RobustConsensus:
    """The robust consensus of F frames.

    Attributes:
        points: (F, 98, 2) consensus points (NaN where no family defines a point or the frame has no labels).
        support: (F, 98) families within ``agree`` of the result at each point.
        families: (F, 98) families defining each point.
        residual: (F, K) each family's median distance to the result over its points (inter-ocular units; NaN where
            the family did not label the frame).
        scale: (F,) inter-ocular distance of the result (px).
    """

    points: np.ndarray
    support: np.ndarray
    families: np.ndarray
    residual: np.ndarray
    scale: np.ndarray


def family_points(points: np.ndarray, model_families: list[str]) -> tuple[np.ndarray, list[str]]:
    """Average the models of each family: (F, M, 98, 2) with NaN where undefined → (F, K, 98, 2) and family names."""
    names = list(dict.fromkeys(model_families))
    out = np.full((*points.shape[:1], len(names), *points.shape[2:]), np.nan, np.float64)
    for k, fam in enumerate(names):
        idx = [i for i, f in enumerate(model_families) if f == fam]
        sub = points[:, idx].astype(np.float64)
        count = np.isfinite(sub[..., 0]).sum(axis=1)
        total = np.nan_to_num(sub).sum(axis=1)
        out[:, k] = np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], np.nan)
    return out, names


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median over axis 1 of ``values`` (F, K, P) with ``weights`` (F, K, P) (0 where undefined)."""
    order = np.argsort(np.where(weights > 0, values, np.inf), axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    cum = np.cumsum(w, axis=1)
    half = cum[:, -1:] / 2
    first = np.argmax(cum >= half - 1e-12, axis=1)[:, None]
    return np.take_along_axis(v, first, axis=1)[:, 0]


def _weighted_mean(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of (F, K, P, 2) with weights (F, K, P); NaN where all weights are 0."""
    total = weights.sum(axis=1)
    num = (np.nan_to_num(points) * weights[..., None]).sum(axis=1)
    return np.where(total[..., None] > 0, num / np.where(total > 0, total, 1)[..., None], np.nan)


def face_frames(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the image vectors of the face frame's x and y unit axes (F, 2) each, scaled by inter-ocular distance.

    x runs from the image-left outer eye corner (WFLW 60) to the other (72); y is x turned 90° towards the chin.
    """
    a, b = INTEROCULAR
    ex = points[:, b] - points[:, a]
    ey = np.stack([-ex[:, 1], ex[:, 0]], axis=1)
    return ex, ey


def _to_image(offsets: np.ndarray, ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """Face-frame offsets (K, 98, 2) → image offsets (F, K, 98, 2) for each frame's axes."""
    return (offsets[None, ..., 0:1] * ex[:, None, None, :] + offsets[None, ..., 1:2] * ey[:, None, None, :])


def apply_offsets(points: np.ndarray, families: list[str], offsets: dict[str, np.ndarray],
                  reference: np.ndarray) -> np.ndarray:
    """Subtract each family's face-frame offset from its points (F, K, 98, 2); ``reference`` (F, 98, 2) gives each
    frame's face frame (its outer eye corners)."""
    table = np.array([offsets.get(f, np.zeros((98, 2))) for f in families], np.float64)
    ex, ey = face_frames(reference)
    return points - np.nan_to_num(_to_image(table, ex, ey))


def robust_consensus(points: np.ndarray, families: list[str], model: ConsensusModel | None = None,
                     iterations: int = 3) -> RobustConsensus:
    """Robust, reliability-weighted consensus of family points ``(F, K, 98, 2)`` (NaN where undefined).

    See the module docstring. ``families`` names the K families (for the weights and offsets in ``model``).
    """
    model = model or ConsensusModel()
    pts = np.asarray(points, np.float64)
    defined = np.asarray(np.isfinite(pts).all(axis=-1))  # (F, K, P)
    prior = np.broadcast_to(model.prior(families)[None], defined.shape) * defined
    n_fam = defined.sum(axis=1)
    if pts.shape[1] == 0:  # nobody labelled anything
        nan = np.full(pts.shape[:1], np.nan)
        return RobustConsensus(np.full((len(pts), 98, 2), np.nan, np.float32), n_fam.astype(np.int16),
                               n_fam.astype(np.int16), np.zeros((len(pts), 0)), nan)

    def start(values: np.ndarray, w: np.ndarray) -> np.ndarray:
        med = np.stack([_weighted_median(values[..., c], w) for c in range(2)], axis=-1)
        return np.where((n_fam >= 3)[..., None], med, _weighted_mean(values, w))

    x = start(pts, prior)
    if any(np.any(model.offsets.get(f, 0.0)) for f in families):
        pts = apply_offsets(pts, families, model.offsets, x)
        x = start(pts, prior)
    for _ in range(iterations):
        scale = interocular(x)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
        resid = np.linalg.norm(pts - x[:, None], axis=-1) / scale[:, None, None]  # (F, K, P)
        frame_resid = _frame_residual(resid, defined, n_fam)  # (F, K)
        frame_w = 1 / (1 + (np.nan_to_num(frame_resid, nan=0.0) / model.frame_scale) ** 2)
        point_w = 1 / (1 + (np.nan_to_num(resid, nan=0.0) / model.point_scale) ** 2)
        x_new = _weighted_mean(pts, prior * frame_w[..., None] * point_w)
        x = np.where(np.isfinite(scale)[:, None, None], x_new, x)
    scale = interocular(x)
    resid = np.linalg.norm(pts - x[:, None], axis=-1) / np.where(scale > 0, scale, np.nan)[:, None, None]
    support = (defined & (resid <= model.agree)).sum(axis=1)
    frame_resid = _frame_residual(resid, defined, n_fam)
    return RobustConsensus(x.astype(np.float32), support.astype(np.int16), n_fam.astype(np.int16), frame_resid,
                           scale)


def _frame_residual(resid: np.ndarray, defined: np.ndarray, n_fam: np.ndarray) -> np.ndarray:
    """Each family's median residual (F, K) over its points that >= 3 families define (where a median can outvote
    one family), or over those >= 2 define when it has none of the former; NaN where it shares no point."""
    voted = _masked_median(resid, defined & (n_fam >= 3)[:, None])
    return np.where(np.isfinite(voted), voted, _masked_median(resid, defined & (n_fam >= 2)[:, None]))


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over the last axis where ``mask``; NaN where nothing is masked in."""
    masked = np.where(mask, values, np.nan)
    out = np.full(values.shape[:-1], np.nan)
    has = mask.any(axis=-1)
    if has.any():
        out[has] = np.nanmedian(masked[has], axis=-1)
    return out
