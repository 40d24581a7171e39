"""Per-video face work: detect in every frame, track, keep the main face, fill gaps, smooth the box."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av

from pipeline.cluster import worker_cached
from pipeline.faces.detectors import create_detector
from pipeline.faces.tracker import fill_and_smooth, link_tracks, main_track, stitch_tracks
from pipeline.params import FacesParams
from pipeline.video import iter_frames

__all__ = ["track_main_face"]


def track_main_face(video_id: str, clip_path: str | Path, params: FacesParams) -> dict[str, Any]:
    """Return ``{"status": video_status row, "rows": faces rows}`` for one clip. Never raises for a bad video."""
    started = time.monotonic()
    status: dict[str, Any] = {"stage": "faces", "video_id": video_id}
    rows: list[dict[str, Any]] = []
    try:
        detector = worker_cached(
            f"detector:{params.detector}:{params.detect_max_side}:{params.min_score}",
            lambda: create_detector(params.detector, max_side=params.detect_max_side, min_score=params.min_score),
        )
        per_frame = [detector.detect(frame.rgb) for frame in iter_frames(clip_path)]
        n_frames = len(per_frame)
        tracklets = link_tracks(per_frame, params.iou_threshold, params.max_gap)
        track = main_track(stitch_tracks(tracklets, params.max_gap, params.max_shift), params.min_track_frames)
        if track is None:
            found = sum(len(d) > 0 for d in per_frame)
            status.update(status="no_face", n_frames=n_frames,
                          error=f"no face track of >= {params.min_track_frames} frames ({found}/{n_frames} frames "
                                f"had a detection) in {clip_path}")
        else:
            boxes, interpolated = fill_and_smooth(track, n_frames, params.smooth_window, params.smooth_sigma)
            raw = dict(zip(track.frames, zip(track.boxes, track.scores)))
            for frame in range(n_frames):
                det_box, det_score = raw.get(frame, (None, None))
                x1, y1, x2, y2 = (float(v) for v in boxes[frame])
                rows.append({
                    "video_id": video_id, "frame": frame, "track_id": track.track_id, "detector": detector.name,
                    "n_detections": len(per_frame[frame]), "det_score": det_score,
                    "interpolated": bool(interpolated[frame]), "raw_box": det_box,
                    "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                })
            status.update(status="ok", error=None, n_frames=n_frames)
    except (av.error.FFmpegError, OSError) as err:
        status.update(status="decode_error", error=f"{clip_path}: {type(err).__name__}: {err}")
    status["seconds"] = round(time.monotonic() - started, 3)
    return {"status": status, "rows": rows}
