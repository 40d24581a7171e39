"""Rotation search: a detector wrapper that also looks for faces rolled beyond what the model was trained on."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ldeq.geometry import apply_affine
from pipeline.faces.detectors.base import Detections, FaceDetector, empty

__all__ = ["RotatedSearch", "rotate_frame", "map_back"]


def rotate_frame(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The frame rotated by ``angle`` degrees (counter-clockwise on screen) on a canvas large enough to hold all of it,
    and the 2×3 affine that maps rotated-canvas pixels back to frame pixels."""
    h, w = rgb.shape[:2]
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(forward[0, 0]), abs(forward[0, 1])
    out_w, out_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    forward[:, 2] += (out_w / 2 - w / 2, out_h / 2 - h / 2)
    rotated = cv2.warpAffine(rgb, forward, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return rotated, cv2.invertAffineTransform(forward)


def map_back(found: Detections, back: np.ndarray) -> Detections:
    """Detections on a rotated canvas mapped to frame pixels: keypoints exactly, boxes as the axis-aligned box around
    the rotated-back box."""

    def apply(points: np.ndarray) -> np.ndarray:
        return apply_affine(points, back).astype(np.float32)

    x1, y1, x2, y2 = (found.boxes[:, k] for k in range(4))
    corners = apply(np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1),
                              np.stack([x1, y2], 1)], axis=1))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    return Detections(
        boxes, found.scores,
        None if found.keypoints5 is None else apply(found.keypoints5),
        None if found.keypoints6 is None else apply(found.keypoints6),
    )


class RotatedSearch(FaceDetector):
    """Runs ``detector`` upright and, only when that finds nothing, on copies of the frame rotated by each of
    ``angles`` (degrees, counter-clockwise), keeping the copy whose best detection scores highest (ties: the first).

    Most detectors are trained on roughly upright faces; a face rolled further is nearly upright in one of the
    rotated copies, and the copy with the best score is the one closest to upright (an early, weaker hit can come
    with poor keypoints). Results are in frame pixels: keypoints map back exactly, boxes become the axis-aligned box
    around the rotated-back box (so a box found at 45° is up to √2 wider than the face). Cost: one extra pass per
    angle, only on frames where the upright pass found nothing.
    """

    def __init__(self, detector: FaceDetector, angles: Sequence[float] = (30, -30, 60, -60)) -> None:
        self.detector, self.angles = detector, tuple(float(a) for a in angles)
        self.name = f"{detector.name}+rot"
        self.version = f"{detector.version}+rot{','.join(f'{a:g}' for a in self.angles)}"

    def detect(self, rgb: np.ndarray) -> Detections:
        found = self.detector.detect(rgb)
        return found if len(found) else self.search(rgb)

    def search(self, rgb: np.ndarray) -> Detections:
        """The rotated passes alone (what :meth:`detect` does after an empty upright pass)."""
        best, best_score, nothing = None, -np.inf, empty()
        for angle in self.angles:
            rotated, back = rotate_frame(rgb, angle)
            hit = self.detector.detect(rotated)
            if len(hit) == 0:
                nothing = hit  # an empty result shaped like this detector's (keypoint arrays or None)
            elif float(hit.scores.max()) > best_score:
                best, best_score = map_back(hit, back), float(hit.scores.max())
        return nothing if best is None else best
