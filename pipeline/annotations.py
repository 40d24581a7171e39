"""Final per-frame labels of a selected video: the consensus WFLW-98 landmarks, validity and the tracked box."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.params import ScoreParams
from pipeline.uncertainty import video_labels

__all__ = ["video_annotations"]


def _none_if_nan(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def video_annotations(video_id: str, subset: str, landmarks: pa.Table, faces: pa.Table,
                      params: ScoreParams) -> dict[str, Any]:
    """Return ``{"rows", "boxes" (F, 4), "points" (F, 98, 2), "valid" (F,)}`` for every clip frame of one video.

    Every frame of the faces manifest gets a row: invalid frames (no valid box, families disagree overall or on most
    points, collapsed shape) carry ``valid = False`` and whatever labels exist (NaN points where no model labelled
    the frame); nothing is dropped. Raises ``ValueError`` when the video has valid frames whose labels miss WFLW-98
    points (no available model defines them), since such labels could not be trusted anywhere.
    """
    labels = video_labels(landmarks, params, faces)
    undefined = np.flatnonzero(np.isnan(labels.points[labels.valid][..., 0]).any(axis=0))
    if undefined.size:
        raise ValueError(f"{video_id}: WFLW-98 points {undefined.tolist()} are defined by no available model")
    boxes = np.stack([faces.column(k).to_numpy(zero_copy_only=False) for k in ("x1", "y1", "x2", "y2")],
                     axis=1).astype(np.float32)
    sources = faces.column("source").to_pylist()
    rows = [
        {"video_id": video_id, "frame": int(f), "subset": subset, "x1": float(b[0]), "y1": float(b[1]),
         "x2": float(b[2]), "y2": float(b[3]), "landmarks": p, "landmarks_raw": r, "valid": bool(v),
         "n_models": int(nm), "n_families": int(nf), "support": s, "disagreement": _none_if_nan(d),
         "instability": _none_if_nan(i), "confidence": _none_if_nan(c), "box_source": src}
        for f, b, p, r, v, nm, nf, s, d, i, c, src in zip(
            labels.frames, boxes, labels.points, labels.raw, labels.valid, labels.n_models, labels.n_families,
            labels.support, labels.disagreement, labels.instability, labels.confidence, sources)
    ]
    return {"rows": rows, "boxes": boxes, "points": labels.points, "valid": labels.valid}
