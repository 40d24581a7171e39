"""Final per-frame labels of a selected video: the consensus WFLW-98 landmarks, validity and the tracked box, with
people's corrections (``corrections/``, from ``python -m pipeline.review import``) merged in.

A corrected frame takes the person's points (``label_source = "human"``, valid). Frames between two corrected frames
of a video, at most ``annotate.propagate_max_gap`` frames apart, take their pseudo-label plus the two corrections'
offsets (person − pseudo-label) interpolated linearly in time (``"propagated"``): the consensus errs on a hard face
in much the same way over a few frames, so a few clicks fix a whole run. Each offset is carried from its frame to
the target frame by the similarity between the two frames' pseudo-labels, so it turns and scales with the head.

Only corrected frames whose pseudo-label was valid anchor the interpolation: an invalid frame's consensus is broken
in its own way (an occluder, families that disagree), so its offset says nothing about its neighbours (on the demo,
using them as anchors raised the propagated frames' NME, benchmarks/README.md). Invalid frames between two anchors
do take the interpolated offset (it lowered their NME there too) but keep ``valid = False``: ``label_source`` says
where the points came from, ``valid`` whether to trust them. A run is left alone where a frame in it has no face box
or no pseudo-label at all (the face left, a shot cut).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.manifest import ManifestError, points_array, read_table
from pipeline.params import ScoreParams
from pipeline.uncertainty import video_labels

__all__ = ["LABEL_SOURCES", "VideoCorrections", "read_corrections", "apply_corrections", "video_annotations"]

#: Values of the annotations' ``label_source`` column.
LABEL_SOURCES = ("human", "propagated", "pseudo", "bridged")


@dataclass(frozen=True)
class VideoCorrections:
    """One video's corrections (clip frame → (98, 2) pixels) and how far they propagate (``annotate`` params)."""

    points: Mapping[int, np.ndarray]
    max_gap: int


def _none_if_nan(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _timestamp(text: str, where: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ManifestError(f"{where}: annotated_at {text!r} is not an ISO 8601 time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # Label Studio writes UTC


def read_corrections(folder: str | Path) -> dict[str, dict[int, np.ndarray]]:
    """Every corrections manifest (``*.parquet``) in ``folder`` as ``{video_id: {frame: (98, 2) points}}``.

    Where several files correct the same frame, the latest ``annotated_at`` wins (then the later file name). A
    missing folder holds no corrections; a file that is not a corrections manifest raises
    :class:`~pipeline.manifest.ManifestError` naming it.
    """
    latest: dict[tuple[str, int], tuple[datetime, str, np.ndarray]] = {}
    root = Path(folder)
    for path in sorted(root.glob("*.parquet")) if root.is_dir() else []:
        table = read_table(path, "corrections")
        points = points_array(table.column("landmarks"))
        for k, (vid, frame, when) in enumerate(zip(table.column("video_id").to_pylist(),
                                                   table.column("frame").to_pylist(),
                                                   table.column("annotated_at").to_pylist())):
            if points.shape[1:] != (98, 2) or not np.isfinite(points[k]).all():
                raise ManifestError(f"{path}: row {k} ({vid} frame {frame}): landmarks are not 98 finite points")
            stamp = _timestamp(when, f"{path}: row {k}")
            key = (vid, int(frame))
            if key not in latest or stamp >= latest[key][0]:
                latest[key] = (stamp, path.name, points[k])
    out: dict[str, dict[int, np.ndarray]] = {}
    for (vid, frame), (_, _, pts) in sorted(latest.items()):
        out.setdefault(vid, {})[frame] = pts
    return out


def _carry(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear part (2, 2) of the least-squares similarity taking shape ``src`` (98, 2) onto ``dst``."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    scale = float((sig * [1.0, d]).sum() / max(float((a**2).sum()), 1e-12))
    return scale * (u @ np.diag([1.0, d]) @ vt)


def apply_corrections(video_id: str, frames: np.ndarray, points: np.ndarray, valid: np.ndarray,
                      box_valid: np.ndarray, corrections: VideoCorrections) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Merge one video's corrections into its pseudo-labels.

    Args:
        frames: (F,) clip frame numbers; points: (F, 98, 2) pseudo-labels (NaN where none); valid, box_valid: (F,).

    Returns the merged points, validity (corrected frames are valid) and each frame's label source. Raises
    ``ValueError`` when a correction names a frame the clip does not have (the clip changed since the review).
    """
    out = points.astype(np.float64).copy()
    flags = np.asarray(valid, bool).copy()
    source = ["pseudo"] * len(frames)
    pos = {int(f): i for i, f in enumerate(frames)}
    unknown = sorted(set(corrections.points) - set(pos))
    if unknown:
        raise ValueError(f"{video_id}: corrected frame(s) {unknown} are not frames of the clip ({len(frames)} "
                         "frames): the clip changed since the review; re-export and review again")
    human = {pos[f]: np.asarray(p, np.float64) for f, p in corrections.points.items()}
    present = np.isfinite(points).all(axis=(1, 2)) & np.asarray(box_valid, bool)  # the face is there
    anchors = sorted(i for i in human if present[i] and flags[i])  # valid pseudo-labels: a meaningful offset
    offsets = {i: human[i] - points[i] for i in anchors}
    for a, b in zip(anchors, anchors[1:]):
        span = float(frames[b] - frames[a])
        if b - a < 2 or span > corrections.max_gap or not present[a + 1:b].all():
            continue
        for i in range(a + 1, b):
            w = float(frames[i] - frames[a]) / span
            off_a = offsets[a] @ _carry(points[a], points[i]).T
            off_b = offsets[b] @ _carry(points[b], points[i]).T
            out[i] = points[i] + (1 - w) * off_a + w * off_b
            source[i] = "propagated"
    for i, pts in human.items():
        out[i], flags[i], source[i] = pts, True, "human"
    return out.astype(np.float32), flags, source


def video_annotations(video_id: str, subset: str, landmarks: pa.Table, faces: pa.Table,
                      params: ScoreParams, corrections: VideoCorrections | None = None) -> dict[str, Any]:
    """Return ``{"rows", "boxes" (F, 4), "points" (F, 98, 2), "valid" (F,)}`` for every clip frame of one video.

    Every frame of the faces manifest gets a row: invalid frames (no valid box, families disagree overall or on most
    points, collapsed shape) carry ``valid = False`` and whatever labels exist (NaN points where no model labelled
    the frame); nothing is dropped. ``corrections`` (people's points) are merged in by :func:`apply_corrections`.
    Raises ``ValueError`` when the video has valid frames whose labels miss WFLW-98 points (no available model
    defines them), since such labels could not be trusted anywhere.
    """
    labels = video_labels(landmarks, params, faces)
    undefined = np.flatnonzero(np.isnan(labels.points[labels.valid][..., 0]).any(axis=0))
    if undefined.size:
        raise ValueError(f"{video_id}: WFLW-98 points {undefined.tolist()} are defined by no available model")
    points, valid = labels.points, labels.valid
    sources = ["bridged" if b else "pseudo" for b in labels.bridged]
    if corrections is not None and corrections.points:
        # only frames whose own consensus stands anchor (and stay valid under) the carried corrections; a bridged
        # frame no correction reaches keeps its bridged label and validity
        points, valid, sources = apply_corrections(video_id, labels.frames, labels.points,
                                                   labels.valid & ~labels.bridged, labels.box_valid, corrections)
        untouched = labels.bridged & np.array([src == "pseudo" for src in sources], bool)
        valid = valid | untouched
        sources = ["bridged" if b else src for b, src in zip(untouched, sources)]
    boxes = np.stack([faces.column(k).to_numpy(zero_copy_only=False) for k in ("x1", "y1", "x2", "y2")],
                     axis=1).astype(np.float32)
    box_sources = faces.column("source").to_pylist()
    rows = [
        {"video_id": video_id, "frame": int(f), "subset": subset, "x1": float(b[0]), "y1": float(b[1]),
         "x2": float(b[2]), "y2": float(b[3]), "landmarks": p, "landmarks_raw": r, "valid": bool(v),
         "n_models": int(nm), "n_families": int(nf), "support": s, "disagreement": _none_if_nan(d),
         "instability": _none_if_nan(i), "confidence": _none_if_nan(c), "self_disagreement": _none_if_nan(sd),
         "excluded_models": int(ex), "box_source": src, "label_source": ls}
        for f, b, p, r, v, nm, nf, s, d, i, c, sd, ex, src, ls in zip(
            labels.frames, boxes, points, labels.raw, valid, labels.n_models, labels.n_families,
            labels.support, labels.disagreement, labels.instability, labels.confidence, labels.self_disagreement,
            labels.excluded, box_sources, sources)
    ]
    return {"rows": rows, "boxes": boxes, "points": points, "valid": valid}
