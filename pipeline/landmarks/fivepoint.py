"""Face detectors as partial landmark models: their 5 keypoints (eye centres, nose tip, mouth corners) as votes.

A detector is run on a crop around the given face box (the face box comes from the faces stage, so the detector only
has to re-find one face at a known place and scale); the detection overlapping the box best gives the 5 points in
:data:`pipeline.faces.detectors.KEYPOINTS5` order. Scheme ``five`` maps them point to point onto WFLW-98 (eye centres
are WFLW's pupils 96/97; see :data:`pipeline.landmarks.schemes.FIVE_TO_WFLW98`). Each detector is its own family:
the detectors were trained separately (RetinaFace, CenterFace on WIDER FACE; YuNet; MTCNN on CelebA/WIDER), so their
errors are not shared the way two MediaPipe meshes share theirs.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ldeq.geometry import apply_affine
from pipeline.faces.detectors.base import FaceDetector, iou_matrix
from pipeline.landmarks.adapters import LandmarkModel

__all__ = ["FivePointModel", "FIVE_POINT_MODELS", "create_five_point_model"]

#: Landmark-model name → (detector name, models_store key holding its weights, for the licence).
FIVE_POINT_MODELS: dict[str, tuple[str, str]] = {
    "retinaface_5": ("retinaface", "retinaface_mnet_py"),
    "centerface_5": ("centerface", "centerface"),
    "yunet_5": ("yunet", "yunet_lib"),
    "mtcnn_5": ("mtcnn", "mtcnn_onet"),
}


class FivePointModel(LandmarkModel):
    """A face detector's 5 keypoints for the face in ``box``.

    Crop convention: a square of side ``crop_scale × max(w, h)`` centred on the box, rotated upright by ``roll``
    degrees when asked, resized to ``crop_size`` px (area filter when shrinking). The detection with the largest IoU
    with the box (at least ``min_iou``) is kept; none gives NaN points and confidence None. Confidence is the
    detector's score. Roll correction runs the crop once more, rotated, only when the first pass finds the eye line
    tilted by more than ``min_roll_deg`` (rotating the crop, not the frame, costs one small warp).
    """

    scheme = "five"
    eyes = ((0,), (1,))
    crop_scale = 2.0
    crop_size = 160
    min_iou = 0.2
    min_roll_deg = 15.0  # detectors are trained with roll augmentation: only large rolls are worth a second pass

    def __init__(self, name: str, detector: FaceDetector, licence_key: str) -> None:
        self.name, self.family = name, detector.name
        self.version = detector.version
        self.licence_key = licence_key
        self._detector = detector

    def _crop_affine(self, box: np.ndarray, roll: float) -> tuple[np.ndarray, int]:
        """Affine (2×3) from frame pixels to a full-resolution upright square around the box, and its side."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(int(round(self.crop_scale * max(x2 - x1, y2 - y1))), 8)
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        affine = np.asarray(cv2.getRotationMatrix2D(centre, roll, 1.0), np.float64)
        affine[:, 2] += (side - 1) / 2 - np.asarray(centre)
        return affine, side

    def _predict_rolled(self, rgb: np.ndarray, box: np.ndarray, roll: float) -> tuple[np.ndarray, float | None]:
        affine, side = self._crop_affine(box, roll)
        crop = cv2.warpAffine(rgb, affine, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        scale = self.crop_size / side
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (self.crop_size, self.crop_size), interpolation=interp)
        found = self._detector.detect(crop)
        if not len(found) or found.keypoints5 is None:
            return np.full((5, 2), np.nan, np.float32), None
        # the box in crop pixels: same centre, same size (the crop is centred on it), any roll
        half = np.array([box[2] - box[0], box[3] - box[1]], np.float64) * scale / 2
        mid = (self.crop_size - 1) / 2
        target = np.array([[mid - half[0], mid - half[1], mid + half[0], mid + half[1]]])
        overlap = iou_matrix(target, found.boxes.astype(np.float64))[0]
        best = int(np.argmax(overlap))
        if overlap[best] < self.min_iou:
            return np.full((5, 2), np.nan, np.float32), None
        # crop pixel (pixel centres at integers) → full-resolution square → frame
        square = (found.keypoints5[best].astype(np.float64) + 0.5) / scale - 0.5
        back = cv2.invertAffineTransform(affine)
        return apply_affine(square, back).astype(np.float32), float(found.scores[best])

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        return self._predict_rolled(rgb, box, 0.0)

    def predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Native 5 points ``(5, 2)`` in frame pixels (NaN if the detector misses) and the detection score."""
        points, confidence = self._predict_rolled(rgb, box, 0.0)
        if not np.isfinite(points).all():
            return points, confidence
        (lx, ly), (rx, ry) = points[0], points[1]
        roll = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
        if abs(roll) < self.min_roll_deg:
            return points, confidence
        upright, upright_conf = self._predict_rolled(rgb, box, roll)
        return (upright, upright_conf) if np.isfinite(upright).all() else (points, confidence)


def create_five_point_model(name: str) -> FivePointModel:
    """Build the 5-point adapter registered under ``name`` (e.g. ``retinaface_5``) with a single-threaded detector.

    Raises:
        KeyError: an unknown name.
        ModelUnavailable: the detector's files are missing.
    """
    from pipeline.faces.detectors import create_detector

    try:
        detector_name, licence_key = FIVE_POINT_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown five-point model {name!r}; known: {sorted(FIVE_POINT_MODELS)}") from None
    kwargs: dict[str, Any] = {"max_side": None, "threads": 1}
    if detector_name == "mtcnn":
        # the face fills about half the crop: a pyramid starting at faces of a quarter of the crop is enough
        kwargs["min_face"] = FivePointModel.crop_size / 4
    return FivePointModel(name, create_detector(detector_name, **kwargs), licence_key)
