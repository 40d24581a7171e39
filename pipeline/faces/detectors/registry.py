"""Detectors by name, a fallback chain over names, and the optional rotation search.

Backends are imported only when built, so importing this package does not pull in torch, onnxruntime or LiteRT.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.faces.detectors.base import FaceDetector
from pipeline.faces.detectors.dlib_hog import DlibHOGDetector
from pipeline.models_store import ModelUnavailable

__all__ = ["DETECTORS", "create_detector", "first_available"]

log = logging.getLogger(__name__)


def _lazy(module: str, cls: str) -> Callable[..., FaceDetector]:
    # ``module`` is the full dotted name, so pipeline.imports finds it and DVC deps cover the backend's file
    def build(**kwargs: Any) -> FaceDetector:
        return getattr(importlib.import_module(module), cls)(**kwargs)

    build.__name__ = build.__qualname__ = cls
    return build


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "dlib_hog": DlibHOGDetector,
    "blazeface_short": _lazy("pipeline.faces.detectors.blazeface", "BlazeFaceShort"),
    "blazeface_full": _lazy("pipeline.faces.detectors.blazeface", "BlazeFaceFull"),
    "retinaface": _lazy("pipeline.faces.detectors.retinaface", "RetinaFaceDetector"),
    "centerface": _lazy("pipeline.faces.detectors.centerface", "CenterFaceDetector"),
    "yunet": _lazy("pipeline.faces.detectors.yunet", "YuNetDetector"),
    "mtcnn": _lazy("pipeline.faces.detectors.mtcnn", "MTCNNDetector"),
    "scrfd": _lazy("pipeline.faces.detectors.scrfd", "SCRFDDetector"),
    "fused": _lazy("pipeline.faces.detectors.fusion", "FusedDetector"),
}


def first_available(names: Sequence[str], **kwargs: Any) -> FaceDetector:
    """The first of ``names`` whose model loads; each one skipped is logged with its one-line reason.

    Raises:
        ModelUnavailable: none of them loads (the message lists every reason).
    """
    reasons = []
    for name in names:
        try:
            return create_detector(name, **kwargs)
        except (ModelUnavailable, ImportError) as err:
            reasons.append(f"{name}: {err}")
            log.warning("face detector %s unavailable, trying the next one: %s", name, err)
    raise ModelUnavailable("no face detector available: " + "; ".join(reasons))


def create_detector(name: str, search_angles: Sequence[float] = (), **kwargs: Any) -> FaceDetector:
    """Build the detector registered under ``name``; ``"a|b|c"`` is a fallback chain (:func:`first_available`).

    ``search_angles`` non-empty wraps the result in :class:`~pipeline.faces.detectors.search.RotatedSearch`.
    Other keyword arguments go to the detector's constructor.

    Raises:
        KeyError: an unknown name.
        ModelUnavailable: the model's files are missing (one line naming the file and how to fetch it).
    """
    if "|" in name:
        detector = first_available([n.strip() for n in name.split("|")], **kwargs)
    else:
        try:
            factory = DETECTORS[name]
        except KeyError:
            raise KeyError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}") from None
        detector = factory(**kwargs)
    if search_angles:
        from pipeline.faces.detectors.search import RotatedSearch

        detector = RotatedSearch(detector, search_angles)
    return detector
