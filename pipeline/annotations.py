"""Final per-frame labels: the consensus WFLW-98 landmarks plus the tracked box, per selected video."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.uncertainty import frame_consensus

__all__ = ["video_annotations"]


def video_annotations(video_id: str, subset: str, landmarks: pa.Table, faces: pa.Table) -> dict[str, Any]:
    """Return ``{"rows", "boxes" (F, 4), "points" (F, 98, 2)}`` for one video, or raise ``ValueError`` saying why.

    Every WFLW-98 point must be defined by at least one model family in every frame.
    """
    fc = frame_consensus(landmarks)
    undefined = np.flatnonzero(np.isnan(fc.points[..., 0]).any(axis=0))
    if undefined.size:
        raise ValueError(f"{video_id}: WFLW-98 points {undefined.tolist()} are defined by no available model")
    face_rows = {r["frame"]: r for r in faces.to_pylist()}
    missing = [int(f) for f in fc.frames if int(f) not in face_rows]
    if missing:
        raise ValueError(f"{video_id}: frames {missing[:5]} have landmarks but no face box")
    boxes = np.array([[face_rows[int(f)][k] for k in ("x1", "y1", "x2", "y2")] for f in fc.frames], np.float32)
    rows = [
        {"video_id": video_id, "frame": int(f), "subset": subset, "x1": float(b[0]), "y1": float(b[1]),
         "x2": float(b[2]), "y2": float(b[3]), "landmarks": p, "n_models": int(v.min()),
         "disagreement": None if not np.isfinite(d) else float(d)}
        for f, b, p, v, d in zip(fc.frames, boxes, fc.points, fc.votes, fc.disagreement)
    ]
    return {"rows": rows, "boxes": boxes, "points": fc.points}
