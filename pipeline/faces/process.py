"""Per-video face work: detect in every frame (rotation search when upright finds nothing), split at shot cuts,
link tracks, choose the main face, follow it with landmarks where detection fails, smooth the box without lag.

The landmark model that follows the face comes from the caller (a :data:`LandmarkModels` factory, e.g.
``pipeline.landmarks.adapters.create_landmark_model``): the faces package does not import the landmarks package,
which imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np

from pipeline.cluster import worker_cached
from pipeline.faces.detectors import Detections, FaceDetector, create_detector
from pipeline.faces.tracker import (
    FaceTrack,
    Track,
    fill_track,
    iou,
    link_tracks,
    main_face_tracks,
    main_track,
    shot_cuts,
    smooth_boxes,
)
from pipeline.params import FacesParams
from pipeline.runcache import failure_status
from pipeline.video import iter_frames, read_frames

__all__ = ["track_main_face", "LandmarkFollower", "LandmarkPredictor", "LandmarkModels", "build_detector",
           "cache_key_facts"]

_THUMB = (32, 24)  # grey thumbnail for shot-cut detection: cheap, insensitive to small motion


def build_detector(params: FacesParams) -> FaceDetector:
    """The detector (or fallback chain) named in params, with the rotation search when angles are given."""
    return create_detector(params.detector, search_angles=params.search_angles, max_side=params.detect_max_side,
                           min_score=params.min_score, threads=1)


def _detector(params: FacesParams) -> FaceDetector:
    """The detector of ``params``, built once per worker thread (the tasks and :func:`cache_key_facts` share it)."""
    return worker_cached(f"detector:{params.model_dump_json()}", lambda: build_detector(params))


def cache_key_facts(params: FacesParams) -> dict[str, Any]:
    """The detector that ``params.detector`` (a fallback chain) resolves to here, for the run cache's key: boxes of
    the chain's second choice, found while the first one's file was missing, are stored under a key of their own and
    never served to a run where the first one loads. None where none of them loads (every video is then a
    ``model_error`` of that run, never stored)."""
    try:
        detector = _detector(params)
    except Exception:  # noqa: BLE001 - whatever stops the build stops every task too, and they report it
        return {"detector": None}
    return {"detector": detector.name, "version": detector.version}


class LandmarkPredictor(Protocol):
    """What the follower needs of a landmark model (:class:`pipeline.landmarks.adapters.LandmarkModel` is one)."""

    def predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Points ``(K, 2)`` in frame pixels and a face-presence confidence (None if the model has none), from an
        RGB frame and a face box ``(x1, y1, x2, y2)``."""
        ...


#: A landmark model by name (``faces.track_landmarks``), created only when some frame needs the follower.
LandmarkModels = Callable[[str], LandmarkPredictor]


class LandmarkFollower:
    """Finds the face's box in a frame from its landmarks, started from the neighbouring frame's box.

    A landmark model always returns points, face or not, so each step is checked: the model's face-presence score
    (where it has one, e.g. MediaPipe's mesh) must reach ``min_confidence``, the new box must overlap the prior box
    (IoU ≥ ``min_iou``), keep its size within ``max_scale`` (×, ÷), and lie at least half inside the frame. The
    box is the landmarks' bounding box mapped to the detector's box convention by a calibration measured on the
    track's own detected frames (median offset and scale of detector box vs. landmark box).
    """

    def __init__(self, model: LandmarkPredictor, frames: dict[int, np.ndarray], track: Track,
                 min_confidence: float = 0.5, min_iou: float = 0.3, max_scale: float = 1.25,
                 calibration_frames: int = 5) -> None:
        self.model, self.frames, self.min_iou, self.max_scale = model, frames, min_iou, max_scale
        self.min_confidence = min_confidence
        samples = []
        for f, box in list(zip(track.frames, track.boxes, strict=True))[:calibration_frames]:
            lm = self._landmark_box(frames[f], box) if f in frames else None
            if lm is not None:
                side = max(lm[2] - lm[0], lm[3] - lm[1], 1e-6)
                samples.append([((box[0] + box[2]) - (lm[0] + lm[2])) / 2 / side,
                                ((box[1] + box[3]) - (lm[1] + lm[3])) / 2 / side,
                                (box[2] - box[0]) / side, (box[3] - box[1]) / side])
        self.calibration = np.median(np.array(samples), axis=0) if samples else None

    def _landmark_box(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        points, confidence = self.model.predict(rgb, np.asarray(box, np.float32))
        if confidence is not None and confidence < self.min_confidence:
            return None
        return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)

    def __call__(self, frame: int, prior: np.ndarray) -> np.ndarray | None:
        if self.calibration is None or frame not in self.frames:
            return None
        rgb = self.frames[frame]
        lm = self._landmark_box(rgb, prior)
        if lm is None:
            return None
        side = max(lm[2] - lm[0], lm[3] - lm[1], 1e-6)
        dx, dy, sw, sh = self.calibration
        cx, cy = (lm[0] + lm[2]) / 2 + dx * side, (lm[1] + lm[3]) / 2 + dy * side
        box = np.array([cx - sw * side / 2, cy - sh * side / 2, cx + sw * side / 2, cy + sh * side / 2])
        scale = (box[2] - box[0]) / max(prior[2] - prior[0], 1e-6)
        height, width = rgb.shape[:2]
        inside = (max(0.0, min(box[2], width) - max(box[0], 0)) * max(0.0, min(box[3], height) - max(box[1], 0)))
        area = (box[2] - box[0]) * (box[3] - box[1])
        if iou(box, prior) < self.min_iou or not 1 / self.max_scale <= scale <= self.max_scale or inside < area / 2:
            return None
        return box


def _detect_all(detector: FaceDetector, clip_path: str | Path) -> tuple[list[Detections], list[np.ndarray],
                                                                        tuple[int, int]]:
    per_frame, thumbs, size = [], [], (0, 0)
    for frame in iter_frames(clip_path):
        per_frame.append(detector.detect(frame.rgb))
        grey = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
        thumbs.append(cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA))
        size = (frame.rgb.shape[1], frame.rgb.shape[0])
    return per_frame, thumbs, size


def _needed_frames(track: Track, n_frames: int, max_gap: int) -> list[int]:
    """Frames the landmark follower may visit (not detected, within ``max_gap`` of a detection) + calibration."""
    detected = set(track.frames)
    near: set[int] = set()
    for f in track.frames:
        near.update(range(max(0, f - max_gap), min(n_frames, f + max_gap + 1)))
    return sorted((near - detected) | set(track.frames[:5]))


def track_main_face(video_id: str, clip_path: str | Path, params: FacesParams,
                    landmark_models: LandmarkModels) -> dict[str, Any]:
    """Return ``{"status": video_status row, "rows": faces rows}`` for one clip. Never raises for a bad video.

    ``landmark_models`` creates the ``params.track_landmarks`` model that follows the face where detection fails.
    """
    started = time.monotonic()
    status: dict[str, Any] = {"stage": "faces", "video_id": video_id}
    rows: list[dict[str, Any]] = []
    try:
        detector = _detector(params)
        per_frame, thumbs, size = _detect_all(detector, clip_path)
        n_frames = len(per_frame)
        cuts = shot_cuts(thumbs, params.cut_threshold)
        tracks = link_tracks(per_frame, cuts, params.iou_threshold, params.max_gap, params.max_shift)
        main = main_track(tracks, params.main_face, params.min_track_frames, size)
        track = None if main is None else main_face_tracks(tracks, main)
        if track is None:
            found = sum(len(d) > 0 for d in per_frame)
            status.update(status="no_face", n_frames=n_frames,
                          error=f"no face track of >= {params.min_track_frames} frames ({found}/{n_frames} frames "
                                f"had a detection) in {clip_path}")
        else:
            follower = None
            needed = _needed_frames(track, n_frames, params.max_gap)
            if params.track_landmarks and set(needed) - set(track.frames):  # only when some frame lacks a detection
                name = str(params.track_landmarks)
                model = worker_cached(f"landmarks:{name}", lambda: landmark_models(name))
                frames = dict(zip(needed, read_frames(clip_path, needed), strict=True))
                follower = LandmarkFollower(model, frames, track, params.landmark_min_confidence)
            face = smooth_boxes(fill_track(track, n_frames, cuts, params.max_gap, follower), params.smooth_window,
                                params.smooth_sigma, params.smooth_max_shift)
            rows = _rows(video_id, detector.name, track, face, per_frame)
            status.update(status="ok", error=None, n_frames=n_frames)
    except (av.error.FFmpegError, OSError, RuntimeError, MemoryError) as err:  # ModelUnavailable is a RuntimeError
        # media FFmpeg rejects is a fact of the video; a model, the file system or memory failing is this run's
        status.update(failure_status(err, clip_path))
    status["seconds"] = round(time.monotonic() - started, 3)
    return {"status": status, "rows": rows}


def _rows(video_id: str, detector: str, track: Track, face: FaceTrack, per_frame: list[Detections]
          ) -> list[dict[str, Any]]:
    scores = dict(zip(track.frames, track.scores, strict=True))
    valid = face.valid
    rows = []
    for frame, src in enumerate(face.source):
        x1, y1, x2, y2 = (float(v) for v in face.boxes[frame])
        rows.append({
            "video_id": video_id, "frame": frame, "track_id": track.track_id, "detector": detector,
            "n_detections": len(per_frame[frame]), "det_score": scores.get(frame), "source": src,
            "valid": bool(valid[frame]), "roll": None if np.isnan(face.roll[frame]) else float(face.roll[frame]),
            "raw_box": None if src == "none" else face.raw[frame], "x1": x1, "y1": y1, "x2": x2, "y2": y2,
        })
    return rows
