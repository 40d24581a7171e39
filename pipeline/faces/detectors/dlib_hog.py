"""dlib's HOG + linear SVM frontal face detector."""

from __future__ import annotations

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale

__all__ = ["DlibHOGDetector"]


class DlibHOGDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal face detector (box only, no keypoints).

    Input: RGB. Frames are downscaled so their longer side is at most ``max_side`` (HOG time grows with area); boxes
    are mapped back to frame pixels. Scores are SVM margins (not probabilities) from ``run()``, thresholded at
    ``min_score`` (None means 0.0), so upsampling cannot let in weak hits.
    """

    name, version = "dlib_hog", "dlib-20.0.1/frontal_face_detector"

    def __init__(self, max_side: int = 640, min_score: float | None = 0.0, upsample: int = 0, threads: int = 1) -> None:
        import dlib

        del threads  # HOG runs on one thread; accepted so every detector takes the same common arguments
        self._detector = dlib.get_frontal_face_detector()
        self.max_side, self.upsample = max_side, upsample
        self.min_score = 0.0 if min_score is None else min_score

    def detect(self, rgb: np.ndarray) -> Detections:
        image, scale = downscale(rgb, self.max_side)
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, self.min_score)
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)
        return Detections(boxes / scale, np.asarray(scores, np.float32).reshape(-1))
