"""Face detectors behind one interface.

Conventions (input, boxes, scores, keypoint order) are in :mod:`pipeline.faces.detectors.base`; one module per
model family; :func:`create_detector` builds any of them by name (``"a|b"`` = first that loads).
"""

from __future__ import annotations

from pipeline.faces.detectors.base import KEYPOINTS5, KEYPOINTS6, Detections, FaceDetector
from pipeline.faces.detectors.dlib_hog import DlibHOGDetector
from pipeline.faces.detectors.registry import DETECTORS, create_detector, first_available
from pipeline.faces.detectors.search import RotatedSearch
from pipeline.models_store import ModelUnavailable

__all__ = ["KEYPOINTS5", "KEYPOINTS6", "Detections", "FaceDetector", "DlibHOGDetector", "DETECTORS",
           "create_detector", "first_available", "RotatedSearch", "ModelUnavailable"]
