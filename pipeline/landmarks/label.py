"""Per-video pseudo-labelling: run every available landmark model on the main face of every frame with a valid box.

Per frame, only a square *canvas* around the face box is converted to RGB (side ``CONTEXT`` × the box side: every
model's crop fits inside it), straight from the decoded YUV planes with the same exact integer conversion the rest
of the pipeline uses, so the models see the same pixels as on the full frame at a fraction of the conversion cost.
When the head is rolled (the faces stage's roll, else the previous frame's labels) the canvas is cut upright once,
shared by all models, so that their own roll check rarely has to run a second pass.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ldeq.geometry import apply_affine
from ldeq.wflw import INTEROCULAR
from pipeline.cluster import worker_cached
from pipeline.landmarks.adapters import CropMode, LandmarkModel, create_landmark_model
from pipeline.landmarks.fivepoint import FIVE_POINT_MODELS, create_five_point_model
from pipeline.landmarks.schemes import scheme_map
from pipeline.models_store import MODEL_FILES, ModelUnavailable
from pipeline.video import frame_rgb

__all__ = ["available_models", "create_model", "model_licence", "label_video", "CONTEXT"]

log = logging.getLogger(__name__)

#: Canvas side / face-box side: covers the detectors' 2× crop and MediaPipe's 1.5× crop at any rotation (1.5 √2).
CONTEXT = 2.2
#: Pre-rotate the canvas when the roll estimate is at least this (the landmark adapters' own threshold).
MIN_ROLL_DEG = 5.0


def create_model(name: str, crop: CropMode | None = None) -> LandmarkModel:
    """Build landmark model ``name``: a registered landmark adapter or a face detector's 5 points (``*_5``, which
    find their own box: no crop mode). ``crop`` None: the crop mode ``conventions.json`` gives the label stage."""
    if name in FIVE_POINT_MODELS:
        return create_five_point_model(name)
    return create_landmark_model(name, crop)


def model_licence(model: LandmarkModel) -> str | None:
    """The licence of a model's weights as recorded in :data:`pipeline.models_store.MODEL_FILES` (None if unknown)."""
    for attr in ("licence_key", "model_key", "weights_key", "name"):
        key = getattr(model, attr, None)
        if key in MODEL_FILES:
            return MODEL_FILES[key].licence
    return None


def _cache_key(name: str, crop: CropMode | None) -> str:
    # never the faces stage's key ("landmarks:<name>", crop mode "given"): a dask worker may run both stages
    return f"landmarks:{name}:{crop or 'label'}"


def available_models(names: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, str]]:
    """Split model names into those that load here and ``{name: reason}`` for those that do not."""
    ok, missing = [], {}
    for name in names:
        try:
            worker_cached(_cache_key(name, None), partial(create_model, name))
            ok.append(name)
        except (ModelUnavailable, KeyError, ImportError) as err:
            missing[name] = str(err)
    return ok, missing


def _canvas(frame: av.VideoFrame, box: np.ndarray, roll: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canvas around ``box`` (upright by ``roll`` degrees), the box in canvas pixels and the affine canvas→frame.

    Without rotation the canvas is an integer-shifted copy of the frame (zeros outside it, as the adapters pad), so
    every adapter's crop of it equals its crop of the full frame.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(math.ceil(CONTEXT * max(x2 - x1, y2 - y1))), 16)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ox, oy = int(round(cx - side / 2)), int(round(cy - side / 2))  # canvas origin in the frame (integer shift)
    height, width = frame.height, frame.width
    fx0, fy0, fx1, fy1 = max(ox, 0), max(oy, 0), min(ox + side, width), min(oy + side, height)
    canvas = np.zeros((side, side, 3), np.uint8)
    if fx1 > fx0 and fy1 > fy0:
        canvas[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox] = frame_rgb(frame, (fx0, fy0, fx1, fy1))
    local = np.array([x1 - ox, y1 - oy, x2 - ox, y2 - oy], np.float32)
    to_frame = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]])
    if abs(roll) < MIN_ROLL_DEG:
        return canvas, local, to_frame
    # rotate about the box centre, as the adapters' own second pass does (replicated border, like theirs)
    centre = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    upright = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
    rotated = cv2.warpAffine(canvas, upright, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    back = cv2.invertAffineTransform(upright)
    to_frame = np.vstack([to_frame, [0, 0, 1]]) @ np.vstack([back, [0, 0, 1]])
    return np.asarray(rotated), local, to_frame[:2]


def _roll_of(wflw: np.ndarray) -> float:
    """Eye-line roll (degrees) of WFLW-98 points; NaN where the outer eye corners are undefined."""
    a, b = INTEROCULAR
    d = wflw[b] - wflw[a]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def label_video(video_id: str, clip_path: str | Path, boxes: list[list[float]] | np.ndarray, models: list[str],
                valid: list[bool] | np.ndarray | None = None,
                rolls: list[float | None] | np.ndarray | None = None, crop: CropMode | None = None) -> dict[str, Any]:
    """Return ``{"status": video_status row, "rows": landmarks rows}``; never raises for a bad video.

    ``boxes[k]`` is the main-face box of clip frame ``k``; models run only where ``valid[k]`` (default: where the box
    is finite). ``rolls[k]`` (degrees, NaN/None unknown) is the faces stage's head roll, used to cut the canvas
    upright; where it is unknown the previous labelled frame's roll is used. A model that finds no face in a frame
    (a detector missing it) gives no row there. ``crop`` overrides every model's crop mode (benchmarks compare
    them); None uses the modes stored in ``conventions.json``.
    """
    started = time.monotonic()
    status: dict[str, Any] = {"stage": "label", "video_id": video_id}
    rows: list[dict[str, Any]] = []
    box_arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(box_arr)
    use = np.isfinite(box_arr).all(axis=1) & (box_arr[:, 2] > box_arr[:, 0]) & (box_arr[:, 3] > box_arr[:, 1])
    if valid is not None:
        use &= np.asarray(valid, bool)
    hint = np.full(n, np.nan) if rolls is None else np.array([np.nan if r is None else r for r in rolls], float)
    try:
        adapters = [worker_cached(_cache_key(m, crop), partial(create_model, m, crop)) for m in models]
        maps = [scheme_map(a.scheme) for a in adapters]
        meta = [{"model": a.name, "family": a.family, "scheme": a.scheme, "licence": model_licence(a)}
                for a in adapters]
        n_frames, prev_roll = 0, 0.0
        with av.open(str(clip_path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                n_frames += 1
                if index >= n or not use[index]:
                    continue
                roll = hint[index] if np.isfinite(hint[index]) else prev_roll
                canvas, local, to_frame = _canvas(frame, box_arr[index], roll)
                frame_rolls = []
                for adapter, smap, info in zip(adapters, maps, meta):
                    native, confidence = adapter.predict(canvas, local)
                    if not np.isfinite(native).all():
                        continue
                    native = apply_affine(native.astype(np.float64), to_frame).astype(np.float32)
                    wflw = (smap.weights @ native).astype(np.float32)
                    if smap.mask[INTEROCULAR[0]] and smap.mask[INTEROCULAR[1]]:
                        frame_rolls.append(_roll_of(wflw))
                    wflw[~smap.mask] = 0.0
                    rows.append({"video_id": video_id, "frame": index, **info, "points": native,
                                 "confidence": confidence, "wflw98": wflw, "mask": smap.mask})
                if frame_rolls:
                    prev_roll = float(np.median(frame_rolls))
        if n_frames != n:
            raise ValueError(f"clip has {n_frames} frames but the faces manifest has {n}")
        status.update(status="ok", error=None, n_frames=n_frames)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
        status.update(status="decode_error", error=f"{clip_path}: {err}")
        rows = []
    except (ModelUnavailable, RuntimeError) as err:
        status.update(status="model_error", error=f"{type(err).__name__}: {err}")
        rows = []
    status["seconds"] = round(time.monotonic() - started, 3)
    return {"status": status, "rows": rows}
