"""The WFLW-V folder layout, read with one-line errors: the split lists and each video's arrays.

The official release (and the pipeline's export, which adds ``valid/`` and ``uncertainty/``) is laid out as::

    <root>/videos/<id>.mp4            the clip; frame k of every array is its decoded frame k
    <root>/bboxes/<id>.npy            (F, 4) face boxes x1, y1, x2, y2 in pixels (extra columns are ignored)
    <root>/landmarks/<id>.npy         (F, 98, 2) WFLW-98 points in pixels (NaN where nothing was labelled)
    <root>/valid/<id>.npy             (F,) bool: frames whose labels can be trusted (the pipeline's export only)
    <root>/uncertainty/<id>.npy       (F,) float32 per-frame label uncertainty (the pipeline's export only)
    <root>/hard_video_IDs.txt, easy_video_IDs.txt    the split, video ids separated by white space

Where ``valid/`` is absent every frame whose points and box are finite counts as valid; where ``uncertainty/`` is
absent it is NaN. Readers of this module never import the pipeline: ``ldeq`` stays usable on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LayoutError", "SUBSETS", "SPLIT_FILES", "VideoLabels", "check_video_id", "split_ids", "load_video",
           "load_points"]

#: The two subsets of WFLW-V and their list files, named as in the official release.
SUBSETS = ("hard", "easy")
SPLIT_FILES = {"hard": "hard_video_IDs.txt", "easy": "easy_video_IDs.txt"}
_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")  # a file name: no separators, no '..'


class LayoutError(ValueError):
    """A WFLW-V folder (or a predictions folder) is missing a file or holds one of the wrong shape; the message is
    one line naming the file."""


def check_video_id(video_id: str, where: str) -> str:
    """``video_id`` if it is safe as a file name, else :class:`LayoutError` naming ``where`` it came from."""
    if not _ID.match(video_id) or ".." in video_id:
        raise LayoutError(f"{where}: {video_id!r} is not a video id (letters, digits, '_', '-', '.')")
    return video_id


def split_ids(root: str | Path, subset: str = "all") -> list[str]:
    """The video ids of ``subset`` (``hard``, ``easy`` or ``all``: hard then easy), in list order."""
    if subset not in (*SUBSETS, "all"):
        raise LayoutError(f"subset {subset!r}: expected one of hard, easy, all")
    ids: list[str] = []
    for name in SUBSETS if subset == "all" else (subset,):
        path = Path(root) / SPLIT_FILES[name]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise LayoutError(f"{path}: split list not found (a WFLW-V folder holds {SPLIT_FILES['hard']} and "
                              f"{SPLIT_FILES['easy']})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise LayoutError(f"{path}: cannot read the split list: {err}") from None
        for number, line in enumerate(lines, start=1):
            ids += [check_video_id(token, f"{path}:{number}") for token in line.split()]
    return ids


def _array(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LayoutError(f"{path}: {what} file not found") from None
    except (OSError, ValueError) as err:  # a truncated file, a pickle, not an .npy at all
        raise LayoutError(f"{path}: not a readable .npy array ({err})") from None


def load_points(path: str | Path, n_frames: int | None = None) -> np.ndarray:
    """A (F, 98, 2) landmark array from ``path`` (float64), F = ``n_frames`` when given; :class:`LayoutError`
    naming the file otherwise."""
    path = Path(path)
    points = _array(path, "landmarks")
    if points.ndim != 3 or points.shape[1:] != (98, 2) or (n_frames is not None and len(points) != n_frames):
        frames = "F" if n_frames is None else str(n_frames)
        raise LayoutError(f"{path}: shape {points.shape}, expected ({frames}, 98, 2)")
    if not np.issubdtype(points.dtype, np.number):
        raise LayoutError(f"{path}: dtype {points.dtype} is not numeric")
    return points.astype(np.float64)


@dataclass(frozen=True)
class VideoLabels:
    """One video's arrays; frame k of each is the clip's decoded frame k."""

    video_id: str
    boxes: np.ndarray  # (F, 4) float32 x1, y1, x2, y2
    landmarks: np.ndarray  # (F, 98, 2) float32
    valid: np.ndarray  # (F,) bool
    uncertainty: np.ndarray  # (F,) float32, NaN where unknown
    video: Path  # videos/<id>.mp4 (not checked to exist)

    @property
    def n_frames(self) -> int:
        return len(self.landmarks)


def load_video(root: str | Path, video_id: str) -> VideoLabels:
    """Read one video's boxes, landmarks, validity and uncertainty under ``root`` (see the module docstring)."""
    root = Path(root)
    check_video_id(video_id, str(root))
    landmarks = load_points(root / "landmarks" / f"{video_id}.npy").astype(np.float32)
    n = len(landmarks)
    box_path = root / "bboxes" / f"{video_id}.npy"
    boxes = _array(box_path, "bboxes")
    if boxes.ndim != 2 or boxes.shape[0] != n or boxes.shape[1] < 4:
        raise LayoutError(f"{box_path}: shape {boxes.shape}, expected ({n}, 4) for the {n} frames of "
                          f"landmarks/{video_id}.npy")
    boxes = boxes[:, :4].astype(np.float32)
    usable = np.isfinite(landmarks).all(axis=(1, 2)) & np.isfinite(boxes).all(axis=1)
    valid = usable
    valid_path = root / "valid" / f"{video_id}.npy"
    if valid_path.is_file():
        flags = _array(valid_path, "valid")
        if flags.shape != (n,) or flags.dtype != np.bool_:
            raise LayoutError(f"{valid_path}: shape {flags.shape} dtype {flags.dtype}, expected ({n},) bool")
        valid = flags & usable  # a flagged frame without finite points cannot be used either
    uncertainty = np.full(n, np.nan, np.float32)
    u_path = root / "uncertainty" / f"{video_id}.npy"
    if u_path.is_file():
        values = _array(u_path, "uncertainty")
        if values.shape != (n,):
            raise LayoutError(f"{u_path}: shape {values.shape}, expected ({n},)")
        uncertainty = values.astype(np.float32)
    return VideoLabels(video_id, boxes, landmarks, np.asarray(valid, bool), uncertainty,
                       root / "videos" / f"{video_id}.mp4")
