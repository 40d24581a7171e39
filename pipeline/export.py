"""Export to the official WFLW-V layout: ``bboxes/<id>.npy``, ``landmarks/<id>.npy``, ``videos/<id>.mp4``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.manifest import atomic_path
from pipeline.sources import safe_video_id

__all__ = ["export_wflw_v"]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, array)


def export_wflw_v(root: Path, video_id: str, boxes: np.ndarray, landmarks: np.ndarray, clip: Path) -> None:
    """Write one video in the layout LDEQ's ``test_LDEQ_WFLW_V.py`` reads.

    Args:
        boxes: (F, 4) float32 x1, y1, x2, y2 pixels.
        landmarks: (F, 98, 2) float32 WFLW-98 pixels.
        clip: the trimmed clip; hard-linked when possible (same file system), else copied.
    """
    video_id = safe_video_id(video_id)
    if len(boxes) != len(landmarks):
        raise ValueError(f"{video_id}: {len(boxes)} boxes but {len(landmarks)} landmark frames")
    _save_npy(root / "bboxes" / f"{video_id}.npy", np.asarray(boxes, np.float32))
    _save_npy(root / "landmarks" / f"{video_id}.npy", np.asarray(landmarks, np.float32))
    target = root / "videos" / f"{video_id}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(clip, target)
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copyfile(clip, tmp)
