"""Face detectors behind one interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Detections", "FaceDetector", "DlibHOGDetector", "DETECTORS", "create_detector"]


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame: boxes (N, 4) as x1, y1, x2, y2 pixels, scores (N,), optional 5 keypoints."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints5: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)


class FaceDetector(ABC):
    """Finds faces in an RGB frame (H, W, 3) uint8."""

    name: str
    version: str

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> Detections:
        """Return every face found in the frame."""


class DlibHOGDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal face detector.

    Frames are downscaled so their longer side is at most ``max_side`` (HOG time grows with area); boxes are mapped
    back to frame pixels. Scores come from ``run()`` and are thresholded, so upsampling cannot let in weak hits.
    """

    name, version = "dlib_hog", "dlib-20.0.1/frontal_face_detector"

    def __init__(self, max_side: int = 640, min_score: float = 0.0, upsample: int = 0) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.max_side, self.min_score, self.upsample = max_side, min_score, upsample

    def detect(self, rgb: np.ndarray) -> Detections:
        scale = min(1.0, self.max_side / max(rgb.shape[:2]))
        image = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, self.min_score)
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)
        return Detections(boxes / scale, np.asarray(scores, np.float32).reshape(-1))


DETECTORS: dict[str, Callable[..., FaceDetector]] = {"dlib_hog": DlibHOGDetector}


def create_detector(name: str, **kwargs: float) -> FaceDetector:
    """Build the detector registered under ``name``."""
    try:
        return DETECTORS[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}") from None
