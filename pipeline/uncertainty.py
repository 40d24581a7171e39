"""From the models' per-frame outputs to labels, validity and uncertainty per frame, a score per video, the subsets.

:func:`video_labels` turns one video's ``landmarks`` rows (and its ``faces`` rows) into the robust family consensus
(:func:`pipeline.landmarks.consensus.robust_consensus`) with, per frame:

* ``valid``: the face box is valid (faces stage), at least ``min_families`` families agree with the consensus
  (median distance within the agreement distance), at least ``min_point_agreement`` of the points that
  ``min_families`` families define are backed by that many families (*point agreement*: two families can each agree
  on half the face yet on different halves — under occlusion the result is then a shape no two models drew) and the
  shape did not collapse (inter-ocular distance / box side within ``iod_box``);
* ``disagreement``: mean distance of the families to the consensus over the points at least two define (IOD units);
* ``instability``: mean distance between the raw consensus and its temporally smoothed shape (IOD units) — label
  jitter that the rigid head motion does not explain;
* ``confidence``: median confidence of the models that give one (the face detectors' scores on the face crop, the
  mesh's face-presence score).

Temporal smoothing (labels are built offline, so past and future frames are used): each frame's consensus is split
into a rigid pose (similarity fit to the video's mean shape over all points) and a shape in that pose's frame; the
shape alone is Savitzky–Golay filtered over runs of valid frames, then put back with the frame's own pose. Real and
camera head motion (fast, rigid) is kept; point noise of the models (independent per frame) is reduced.

:func:`video_score` aggregates the per-frame components with the weights in ``params.yaml`` (``score.weights``);
:func:`select_subsets` picks the ``n_hard`` most and the ``n_hard`` least uncertain videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.signal import savgol_filter

from ldeq.wflw import interocular
from pipeline.landmarks.consensus import ConsensusModel, family_points, load_consensus_model, robust_consensus
from pipeline.manifest import points_array
from pipeline.params import ScoreParams

__all__ = ["VideoLabels", "ModelPoints", "model_points", "video_labels", "bridge_gaps", "smooth_shapes", "video_score",
           "select_subsets", "COMPONENTS"]

#: Per-video score components, each a mean over valid frames (confidence and valid share enter as 1 − value).
COMPONENTS = ("disagreement", "instability", "confidence", "valid_share")


@dataclass(frozen=True)
class VideoLabels:
    """Labels of every clip frame of one video (arrays indexed like ``frames``)."""

    frames: np.ndarray  # (F,) clip frame indices
    points: np.ndarray  # (F, 98, 2) final labels (smoothed), NaN where no model labelled the frame
    raw: np.ndarray  # (F, 98, 2) consensus before smoothing
    valid: np.ndarray  # (F,) bool: the consensus stands, or the frame is bridged
    box_valid: np.ndarray  # (F,) bool
    bridged: np.ndarray  # (F,) bool: a short gap whose labels come from the valid frames around it (bridge_gaps)
    n_models: np.ndarray  # (F,) models that labelled the frame
    n_families: np.ndarray  # (F,) families that labelled the frame
    agreeing: np.ndarray  # (F,) families that agree with the consensus
    point_agreement: np.ndarray  # (F,) share of the votable points backed by min_families families
    support: np.ndarray  # (F, 98) families within the agreement distance per point
    disagreement: np.ndarray  # (F,) NaN where fewer than two families labelled
    instability: np.ndarray  # (F,) NaN where the frame is not valid
    confidence: np.ndarray  # (F,) NaN where no model gives a confidence
    self_disagreement: np.ndarray  # (F,) the voting models' mean self-check disagreement (NaN where none ran)
    excluded: np.ndarray  # (F,) models that labelled the frame but failed their self-checks (no vote)
    models: tuple[str, ...]
    families: tuple[str, ...]


@dataclass(frozen=True)
class ModelPoints:
    """One video's ``landmarks`` rows as arrays over its frames (M models)."""

    points: np.ndarray  # (F, M, 98, 2) NaN where a model did not label a frame or does not define a point
    models: list[str]
    families: list[str]  # each model's family
    confidence: np.ndarray  # (F, M) NaN where none
    mirror: np.ndarray  # (F, M) mirror self-disagreement (inter-ocular units), NaN where not run
    jitter: np.ndarray  # (F, M) box-jitter self-disagreement, NaN where not run

    def self_disagreement(self) -> np.ndarray:
        """(F, M) the larger of the two self-checks (NaN where neither ran)."""
        both = np.stack([self.mirror, self.jitter])
        return np.where(np.isfinite(both).any(axis=0), np.nanmax(np.nan_to_num(both, nan=-np.inf), axis=0), np.nan)


def model_points(rows: pa.Table, frames: np.ndarray) -> ModelPoints:
    """One video's ``landmarks`` rows as arrays over ``frames`` (see :class:`ModelPoints`)."""
    names = list(dict.fromkeys(rows.column("model").to_pylist()))
    fam_of = dict(zip(rows.column("model").to_pylist(), rows.column("family").to_pylist()))
    pos = {int(f): i for i, f in enumerate(frames)}
    out = np.full((len(frames), len(names), 98, 2), np.nan, np.float32)
    conf = np.full((len(frames), len(names)), np.nan, np.float32)
    checks = {c: np.full((len(frames), len(names)), np.nan, np.float32) for c in ("mirror", "jitter")}
    if len(rows) == 0:
        return ModelPoints(out, names, [fam_of[n] for n in names], conf, checks["mirror"], checks["jitter"])
    wflw = points_array(rows.column("wflw98"))
    mask = np.asarray(rows.column("mask").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                      bool).reshape(len(rows), -1)
    fi = np.array([pos.get(int(f), -1) for f in rows.column("frame").to_pylist()])
    mi = np.array([names.index(m) for m in rows.column("model").to_pylist()])
    keep = fi >= 0
    out[fi[keep], mi[keep]] = np.where(mask[keep, :, None], wflw[keep], np.nan)
    c = np.array([np.nan if v is None else v for v in rows.column("confidence").to_pylist()], np.float32)
    conf[fi[keep], mi[keep]] = c[keep]
    for check, values in checks.items():
        column = f"{check}_disagreement"
        if column in rows.column_names:
            v = np.array([np.nan if x is None else x for x in rows.column(column).to_pylist()], np.float32)
            values[fi[keep], mi[keep]] = v[keep]
    return ModelPoints(out, names, [fam_of[n] for n in names], conf, checks["mirror"], checks["jitter"])


def _row_mean(values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the finite ``values`` (F, M) where ``use``; NaN where there is none."""
    ok = use & np.isfinite(values)
    count = ok.sum(axis=1)
    return np.where(count > 0, np.where(ok, values, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2]))


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama, no reflection): s, R (2, 2), t (2,)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, d]) @ vt
    scale = float((sig * [1.0, d]).sum() / max((a**2).sum(), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def smooth_shapes(points: np.ndarray, use: np.ndarray, window: int, order: int) -> np.ndarray:
    """Savitzky–Golay filter the non-rigid shape of ``points`` (F, 98, 2) over runs of ``use`` frames.

    Each frame is mapped by its own similarity (fitted on the points every used frame defines) onto the mean shape of
    the used frames, the mapped shapes are filtered in time (runs shorter than ``window`` get the longest odd window
    that fits, none below ``order + 2``), and mapped back with the same similarity. Frames outside ``use`` and points
    some used frame lacks are returned as they are.
    """
    out = points.astype(np.float64).copy()
    if window <= 1 or not use.any():
        return out.astype(np.float32)
    defined = np.isfinite(out[use]).all(axis=(0, 2))  # points every used frame has (the pose is fitted on them)
    if defined.sum() < 3:
        return out.astype(np.float32)
    reference = out[use].mean(axis=0)
    shapes = np.full_like(out, np.nan)
    poses: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    for frame in np.flatnonzero(use).tolist():
        s, rot, t = _similarity(out[frame, defined], reference[defined])
        poses[frame] = (s, rot, t)
        shapes[frame] = s * out[frame] @ rot.T + t
    for start, stop in _runs(use):
        n = stop - start
        w = min(window - 1 + window % 2, n if n % 2 else n - 1)  # odd, and no longer than the run
        if w < order + 2:
            continue
        filtered = savgol_filter(shapes[start:stop, defined], w, order, axis=0, mode="interp")
        for k, f in enumerate(range(start, stop)):
            s, rot, t = poses[f]
            out[f, defined] = (filtered[k] - t) @ rot / s
    return out.astype(np.float32)


def bridge_gaps(points: np.ndarray, valid: np.ndarray, box_valid: np.ndarray, boxes: np.ndarray,
                max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels for short runs of invalid frames between two valid ones, carried by the face box (F, 4).

    A run of at most ``max_gap`` frames whose boxes are all valid, with a valid frame on either side, takes each
    side's labels moved with the box (scaled by the box side about its centre) and blended linearly in time — what an
    annotator's keyframe interpolation does across a passing occluder or a burst of blur. Returns the points
    (F, 98, 2) and the bridged frames (F,) bool.
    """
    out = points.astype(np.float64).copy()
    bridged = np.zeros(len(points), bool)
    if max_gap <= 0:
        return out.astype(np.float32), bridged
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    for start, stop in _runs(~valid):
        if start == 0 or stop == len(valid) or stop - start > max_gap or not box_valid[start:stop].all():
            continue
        a, b = start - 1, stop
        for f in range(start, stop):
            w = (f - a) / (b - a)
            moved = [(out[k] - centre[k]) * (side[f] / side[k]) + centre[f] for k in (a, b)]
            out[f] = (1 - w) * moved[0] + w * moved[1]
            bridged[f] = True
    return out.astype(np.float32), bridged


def video_labels(rows: pa.Table, params: ScoreParams, faces: pa.Table | None = None,
                 model: ConsensusModel | None = None) -> VideoLabels:
    """Consensus labels, validity and per-frame uncertainty components of one video.

    ``faces`` (the video's faces rows) gives the clip's frames, box validity and box sides; without it the frames
    are those with landmarks and every box counts as valid (tests, truth-box benchmarks).
    """
    if faces is not None:
        frames = np.asarray(faces.column("frame").to_numpy(), np.int64)
        box_valid = np.asarray(faces.column("valid").to_numpy(zero_copy_only=False), bool)
        boxes = np.stack([faces.column(k).to_numpy(zero_copy_only=False) for k in ("x1", "y1", "x2", "y2")], 1)
    else:
        frames = np.unique(np.asarray(rows.column("frame").to_numpy(), np.int64))
        box_valid = np.ones(len(frames), bool)
        boxes = np.full((len(frames), 4), np.nan)
    model = model or load_consensus_model(use_offsets=params.offsets)
    mp = model_points(rows, frames)
    pts, names, fams, conf = mp.points, mp.models, mp.families, mp.confidence
    labelled = np.isfinite(pts).all(axis=-1).any(axis=-1)  # (F, M)
    # a model that disagrees with itself (mirror, box jitter) by more than the threshold does not vote on that frame
    self_dis = mp.self_disagreement()
    excluded = labelled & (np.nan_to_num(self_dis, nan=0.0) > params.max_self_disagreement)
    pts = np.where(excluded[..., None, None], np.nan, pts)
    voting = labelled & ~excluded
    frame_self = _row_mean(self_dis, voting)
    fam_pts, fam_names = family_points(pts, fams)
    result = robust_consensus(fam_pts, fam_names, model)
    fam_labelled = np.isfinite(fam_pts).all(axis=-1).any(axis=-1)  # (F, K)
    n_families = fam_labelled.sum(axis=1)
    agreeing = (fam_labelled & (np.nan_to_num(result.residual, nan=np.inf) <= model.agree)).sum(axis=1)
    # disagreement: families' mean distance to the consensus over points two or more of them define
    shared = np.isfinite(fam_pts).all(axis=-1) & (result.families >= 2)[:, None]
    dist = np.linalg.norm(fam_pts - result.points[:, None], axis=-1) / result.scale[:, None, None]
    count = shared.sum(axis=(1, 2))
    spread = np.where(count > 0, np.where(shared, np.nan_to_num(dist), 0).sum(axis=(1, 2)) / np.maximum(count, 1),
                      np.nan)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ratio = result.scale / side
    lo, hi = params.iod_box
    shape_ok = np.where(np.isfinite(ratio), (ratio >= lo) & (ratio <= hi), np.isfinite(result.scale))
    # point agreement: share of the points that min_families families define where that many support the result
    votable = result.families >= params.min_families
    backed = votable & (result.support >= params.min_families)
    point_agreement = np.where(votable.any(axis=1), backed.sum(axis=1) / np.maximum(votable.sum(axis=1), 1), 0.0)
    valid = box_valid & (agreeing >= params.min_families) & (point_agreement >= params.min_point_agreement) & shape_ok
    smoothed = smooth_shapes(result.points, valid, params.smooth_window, params.smooth_order)
    iod = interocular(result.points)
    jitter = np.linalg.norm(result.points - smoothed, axis=-1).mean(axis=-1) / iod
    jitter = np.where(valid, jitter, np.nan)  # instability: of the consensus where it stands on its own
    smoothed, bridged = bridge_gaps(smoothed, valid, box_valid, boxes, params.bridge_max_gap)
    valid = valid | bridged
    confidence = np.full(len(frames), np.nan)
    has_conf = np.isfinite(conf).any(axis=1)
    if has_conf.any():
        confidence[has_conf] = np.nanmedian(conf[has_conf], axis=1)
    return VideoLabels(
        frames=frames, points=smoothed, raw=result.points, valid=valid, box_valid=box_valid,
        n_models=labelled.sum(axis=1).astype(np.int16), n_families=n_families.astype(np.int16),
        agreeing=agreeing.astype(np.int16), point_agreement=point_agreement, support=result.support,
        disagreement=spread,
        instability=jitter, confidence=confidence.astype(np.float64), bridged=bridged,
        self_disagreement=frame_self, excluded=excluded.sum(axis=1).astype(np.int16),
        models=tuple(names), families=tuple(fam_names),
    )


def _mean(values: np.ndarray, use: np.ndarray) -> float:
    sel = values[use & np.isfinite(values)]
    return float(sel.mean()) if sel.size else float("nan")


def video_score(video_id: str, labels: VideoLabels, params: ScoreParams) -> dict[str, Any]:
    """A ``scores`` row (without rank/subset), per-frame components included.

    Status ``model_error`` when frames were labelled but by fewer than ``min_families`` families in all (models
    missing); ``unlabelable`` when fewer than ``min_valid_share`` of its frames are valid, e.g. no frame had a valid
    face box (such a video is never ranked, so never "hard").
    """
    n = len(labels.frames)
    valid_share = float(labels.valid.mean()) if n else 0.0
    row: dict[str, Any] = {
        "video_id": video_id, "n_frames": n, "n_models": len(labels.models), "n_families": len(labels.families),
        "valid_share": valid_share, "disagreement": _mean(labels.disagreement, labels.valid),
        "instability": _mean(labels.instability, labels.valid), "confidence": _mean(labels.confidence, labels.valid),
        "self_disagreement": _mean(labels.self_disagreement, labels.valid),
        "frame_valid": labels.valid.tolist(), "frame_disagreement": labels.disagreement.astype(np.float32),
        "frame_instability": labels.instability.astype(np.float32),
        "frame_self_disagreement": labels.self_disagreement.astype(np.float32),
        "frame_confidence": labels.confidence.astype(np.float32),
    }
    if labels.n_models.any() and len(labels.families) < params.min_families:
        return {**row, "status": "model_error",
                "error": f"{len(labels.families)} model famil(ies) labelled this video; scoring needs >= "
                         f"{params.min_families}"}
    if valid_share < params.min_valid_share:
        return {**row, "status": "unlabelable",
                "error": f"{labels.valid.sum()} of {n} frames valid ({valid_share:.0%} < "
                         f"{params.min_valid_share:.0%}): too few to label"}
    return {**row, "status": "ok", "error": None, "uncertainty": aggregate(row, params)}


def aggregate(row: dict[str, Any], params: ScoreParams) -> float:
    """The per-video score from its components (a ``scores`` row): the weighted sum documented in params.yaml."""
    w: dict[str, float] = {str(k): v for k, v in params.weights.items()}
    terms = {"disagreement": row["disagreement"], "instability": row["instability"],
             "self_disagreement": row.get("self_disagreement", float("nan")),
             "confidence": 1.0 - row["confidence"], "valid_share": 1.0 - row["valid_share"]}
    return float(sum(w.get(k, 0.0) * (float(v) if np.isfinite(v) else 0.0) for k, v in terms.items()))


def select_subsets(rows: list[dict[str, Any]], n_hard: int) -> list[dict[str, Any]]:
    """Rank scored videos by uncertainty (1 = most uncertain): the top ``n_hard`` are ``hard``, the bottom ``n_hard``
    ``easy`` (at most half of the scored videos each, so the two are always the same size).

    Ties break by video_id (ascending from the hard end) so the split is deterministic. Unscored videos and those
    in the middle get subset ``None``.
    """
    scored = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-r["uncertainty"], r["video_id"]))
    n = min(n_hard, len(scored) // 2)
    for rank, row in enumerate(scored, start=1):
        row["rank"] = rank
        row["subset"] = "hard" if rank <= n else "easy" if rank > len(scored) - n else None
    return rows
