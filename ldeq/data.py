"""Data sources for LDEQ: the WFLW-V layout (``bboxes/``, ``landmarks/``, ``videos/``) and face crops."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ldeq.crop import crop_image, crop_transform, to_crop

__all__ = ["crop_sample", "read_wflw_v_video", "video_crops"]


def crop_sample(rgb: np.ndarray, box: np.ndarray, points: np.ndarray, size: int,
                scale: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Crop a frame with the WFLW-V transform; return the crop (size, size, 3) and points in crop pixels."""
    affine = crop_transform(box, size, scale)
    return crop_image(rgb, affine, size), to_crop(points, affine).astype(np.float32)


def _decode(video: Path, wanted: set[int] | None) -> dict[int, np.ndarray]:
    frames = {}
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if wanted is not None and index > max(wanted):
                break
            if wanted is None or index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
    return frames


def read_wflw_v_video(root: str | Path, video_id: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """Boxes (F, 4), landmarks (F, 98, 2) and the video path of one WFLW-V video under ``root``."""
    root = Path(root)
    boxes = np.load(root / "bboxes" / f"{video_id}.npy", allow_pickle=False)[:, :4]
    landmarks = np.load(root / "landmarks" / f"{video_id}.npy", allow_pickle=False)
    return boxes.astype(np.float32), landmarks.astype(np.float32), root / "videos" / f"{video_id}.mp4"


def video_crops(video: str | Path, boxes: np.ndarray, landmarks: np.ndarray, frames: list[int],
                size: int, scale: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, size, size, 3) uint8 and crop-pixel landmarks (N, 98, 2) for the given frame ordinals."""
    decoded = _decode(Path(video), set(frames))
    missing = [f for f in frames if f not in decoded]
    if missing:
        raise ValueError(f"{video}: frames {missing[:5]} are past the end ({len(decoded)} decoded)")
    pairs = [crop_sample(decoded[f], boxes[i], landmarks[i], size, scale) for i, f in enumerate(frames)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
