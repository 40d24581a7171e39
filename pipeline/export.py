"""Export to the official WFLW-V layout: ``bboxes/<id>.npy``, ``landmarks/<id>.npy``, ``videos/<id>.mp4``.

One addition to the official layout: ``valid/<id>.npy`` (F,) bool marks the frames whose labels can be trusted (box
valid, model families agree on most points, no collapse). Invalid frames stay in ``bboxes``/``landmarks`` (NaN where
nothing was measured) so frame ``k`` of every array is clip frame ``k``; readers must skip frames where ``valid`` is
False.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.manifest import atomic_path
from pipeline.sources import safe_video_id

__all__ = ["export_wflw_v", "load_wflw_v"]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, array)


def export_wflw_v(root: Path, video_id: str, boxes: np.ndarray, landmarks: np.ndarray, clip: Path,
                  valid: np.ndarray | None = None) -> None:
    """Write one video in the layout LDEQ's ``test_LDEQ_WFLW_V.py`` reads, plus the per-frame ``valid`` flags.

    Args:
        boxes: (F, 4) float32 x1, y1, x2, y2 pixels (NaN where the face box is unknown).
        landmarks: (F, 98, 2) float32 WFLW-98 pixels (NaN where no model labelled the frame).
        clip: the trimmed clip; hard-linked when possible (same file system), else copied.
        valid: (F,) bool; None means every frame is valid.
    """
    video_id = safe_video_id(video_id)
    if len(boxes) != len(landmarks):
        raise ValueError(f"{video_id}: {len(boxes)} boxes but {len(landmarks)} landmark frames")
    flags = np.ones(len(boxes), bool) if valid is None else np.asarray(valid, bool)
    if flags.shape != (len(boxes),):
        raise ValueError(f"{video_id}: {flags.shape} valid flags for {len(boxes)} frames")
    _save_npy(root / "bboxes" / f"{video_id}.npy", np.asarray(boxes, np.float32))
    _save_npy(root / "landmarks" / f"{video_id}.npy", np.asarray(landmarks, np.float32))
    _save_npy(root / "valid" / f"{video_id}.npy", flags)
    target = root / "videos" / f"{video_id}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(clip, target)
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copyfile(clip, tmp)


def load_wflw_v(root: Path, video_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one exported video back: boxes (F, 4), landmarks (F, 98, 2) and valid flags (F,) (all True if absent)."""
    video_id = safe_video_id(video_id)
    boxes = np.load(root / "bboxes" / f"{video_id}.npy", allow_pickle=False)
    landmarks = np.load(root / "landmarks" / f"{video_id}.npy", allow_pickle=False)
    flags = root / "valid" / f"{video_id}.npy"
    valid = np.load(flags, allow_pickle=False) if flags.is_file() else np.ones(len(boxes), bool)
    return boxes, landmarks, valid
