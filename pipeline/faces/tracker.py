"""Greedy IoU tracking, main-face selection, gap filling and box smoothing.

Linking is greedy by IoU to each track's last box (simple and auditable, keeps the raw detections); short gaps are
filled by linear interpolation and flagged; the crop box is smoothed, never the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from pipeline.faces.detectors import Detections

__all__ = ["iou", "Track", "link_tracks", "stitch_tracks", "main_track", "fill_and_smooth"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes ``(x1, y1, x2, y2)``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    """Detections linked across frames: ``frames[i]`` has ``boxes[i]`` with ``scores[i]``."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def mean_area(self) -> float:
        b = np.array(self.boxes)
        return float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def link_tracks(per_frame: list[Detections], iou_threshold: float = 0.3, max_gap: int = 15) -> list[Track]:
    """Link detections frame to frame: each detection (best score first) joins the live track it overlaps most."""
    tracks: list[Track] = []
    for frame, dets in enumerate(per_frame):
        taken: set[int] = set()
        for d in np.argsort(-dets.scores):
            best, best_iou = None, iou_threshold
            for t in tracks:
                if t.track_id in taken or frame - t.frames[-1] > max_gap + 1:
                    continue
                overlap = iou(t.boxes[-1], dets.boxes[d])
                if overlap >= best_iou:
                    best, best_iou = t, overlap
            if best is None:
                best = Track(len(tracks))
                tracks.append(best)
            best.frames.append(frame)
            best.boxes.append(dets.boxes[d].astype(np.float32))
            best.scores.append(float(dets.scores[d]))
            taken.add(best.track_id)
    return tracks


def _centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between box centres in units of the boxes' mean side."""
    side = 0.5 * ((a[2] - a[0]) + (a[3] - a[1]) + (b[2] - b[0]) + (b[3] - b[1])) / 2
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / max(side, 1e-6))


def stitch_tracks(tracks: list[Track], max_gap: int = 15, max_shift: float = 0.6) -> list[Track]:
    """Join tracklets broken by a detection gap or a fast move: B continues A when it starts after A ends, within
    ``max_gap`` frames, and its first box lies within ``max_shift`` box sides of A's last box (closest first)."""
    pending = sorted(tracks, key=lambda t: t.frames[0])
    stitched: list[Track] = []
    for track in pending:
        candidates = [(t, _centre_shift(t.boxes[-1], track.boxes[0])) for t in stitched
                      if 0 < track.frames[0] - t.frames[-1] <= max_gap + 1]
        candidates = [c for c in candidates if c[1] <= max_shift]
        if candidates:
            host = min(candidates, key=lambda c: c[1])[0]
            host.frames += track.frames
            host.boxes += track.boxes
            host.scores += track.scores
        else:
            stitched.append(track)
    return stitched


def main_track(tracks: list[Track], min_frames: int = 1) -> Track | None:
    """The clip's main face: the track seen in most frames (larger mean area breaks ties), if long enough."""
    eligible = [t for t in tracks if len(t.frames) >= min_frames]
    if not eligible:
        return None
    return max(eligible, key=lambda t: (len(t.frames), t.mean_area()))


def fill_and_smooth(track: Track, n_frames: int, window: int = 7,
                    sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Return boxes for every frame ``(n_frames, 4)`` and an ``interpolated`` flag per frame.

    Gaps inside the track are linearly interpolated; frames before its first or after its last detection hold the
    nearest box. Centre and size are then median-filtered over ``window`` frames (1 disables it), which drops
    single-frame outliers, and Gaussian-smoothed with ``sigma`` frames (0 disables it). The median alone keeps steps:
    a sliding-window detector such as dlib's HOG reports a slowly moving face at a fixed box and then jumps a whole
    cell (the demo saw 10–28 px jumps), and every crop cut from such boxes jumps with it.
    """
    frames = np.array(track.frames)
    boxes = np.array(track.boxes, np.float64)
    every = np.arange(n_frames)
    filled = np.stack([np.interp(every, frames, boxes[:, k]) for k in range(4)], axis=1)
    interpolated = ~np.isin(every, frames)
    if window > 1:
        centre = (filled[:, :2] + filled[:, 2:]) / 2
        size = filled[:, 2:] - filled[:, :2]
        centre = median_filter(centre, size=(window, 1), mode="nearest")
        size = median_filter(size, size=(window, 1), mode="nearest")
        filled = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    if sigma > 0:
        centre = gaussian_filter1d((filled[:, :2] + filled[:, 2:]) / 2, sigma, axis=0, mode="nearest")
        size = gaussian_filter1d(filled[:, 2:] - filled[:, :2], sigma, axis=0, mode="nearest")
        filled = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return filled.astype(np.float32), interpolated
