"""The detector interface, its output type and the box arithmetic every backend shares.

Conventions (every detector follows them):

* input: an RGB frame ``(H, W, 3)`` uint8, any size; each backend converts to its own colour order and scale;
* ``boxes``: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in frame pixels (each model keeps its own notion of how much of
  the head a box covers; the benchmark reports each one's offset from the demo truth);
* ``scores``: ``(N,)`` float32, a probability in [0, 1] where the model gives one (dlib HOG gives an SVM margin);
* ``keypoints5``: ``(N, 5, 2)`` float32 frame pixels in the order of :data:`KEYPOINTS5`, or None when the model has
  no mouth corners. Left/right are as seen in the face's own upright frame: the first eye is the image-left eye of an
  upright frontal face, i.e. the subject's right eye. Each backend converts its model's order into this one;
* ``keypoints6``: BlazeFace's own 6 points (:data:`KEYPOINTS6`, same left/right rule), None for other models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["KEYPOINTS5", "KEYPOINTS6", "Detections", "FaceDetector", "empty", "iou_matrix", "nms", "weighted_nms",
           "downscale"]

KEYPOINTS5 = ("image_left_eye", "image_right_eye", "nose_tip", "image_left_mouth_corner", "image_right_mouth_corner")
KEYPOINTS6 = ("image_left_eye", "image_right_eye", "nose_tip", "mouth_centre", "image_left_ear_tragion",
              "image_right_ear_tragion")


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame: boxes (N, 4) as x1, y1, x2, y2 pixels, scores (N,), optional keypoints."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints5: np.ndarray | None = None
    keypoints6: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (an integer or boolean array), keypoints included."""
        return Detections(
            self.boxes[index], self.scores[index],
            None if self.keypoints5 is None else self.keypoints5[index],
            None if self.keypoints6 is None else self.keypoints6[index],
        )


def empty(keypoints5: bool = False, keypoints6: bool = False) -> Detections:
    """No faces, with keypoint arrays of the right shape where the model has them."""
    return Detections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
        np.zeros((0, 5, 2), np.float32) if keypoints5 else None,
        np.zeros((0, 6, 2), np.float32) if keypoints6 else None,
    )


class FaceDetector(ABC):
    """Finds faces in an RGB frame (H, W, 3) uint8."""

    name: str
    version: str

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> Detections:
        """Return every face found in the frame."""


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N, 4) with every box in ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, min_overlap: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first.

    ``min_overlap`` divides the intersection by the smaller box instead of the union (MTCNN's last stage).
    """
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=1)
        area_i = np.prod(boxes[i, 2:] - boxes[i, :2])
        area_r = np.prod(boxes[rest, 2:] - boxes[rest, :2], axis=1)
        denom = np.minimum(area_i, area_r) if min_overlap else area_i + area_r - inter
        order = rest[inter / np.maximum(denom, 1e-12) <= threshold]
    return np.asarray(keep, np.int64)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's WEIGHTED suppression: each cluster (IoU > threshold with its best box) becomes the score-weighted
    mean of its boxes and keypoints, with the best box's score. Returns boxes, scores and points, best first."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_scores, out_points = [], [], []
    while order.size:
        best = order[0]
        inside = iou_matrix(boxes[best][None], boxes[order])[0] > threshold
        inside[0] = True  # a degenerate (zero-area) best box must still leave the queue
        cluster, order = order[inside], order[~inside]
        weights = scores[cluster] / scores[cluster].sum()
        out_boxes.append(weights @ boxes[cluster])
        out_scores.append(scores[best])
        if points is not None:
            out_points.append(np.tensordot(weights, points[cluster], axes=1))
    if not out_boxes:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                None if points is None else np.zeros((0, *points.shape[1:]), np.float32))
    return (np.asarray(out_boxes, np.float32), np.asarray(out_scores, np.float32),
            None if points is None else np.asarray(out_points, np.float32))


def downscale(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """The frame shrunk so its longer side is at most ``max_side`` (never enlarged), and the scale applied."""
    if not max_side:
        return rgb, 1.0
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale == 1.0:
        return rgb, 1.0
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale
