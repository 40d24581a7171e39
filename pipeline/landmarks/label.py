"""Per-video pseudo-labelling: run every available landmark model on the main face of every frame."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.cluster import worker_cached
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.landmarks.schemes import to_wflw98
from pipeline.models_store import ModelUnavailable
from pipeline.video import iter_frames

__all__ = ["available_models", "label_video"]

log = logging.getLogger(__name__)


def available_models(names: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, str]]:
    """Split model names into those that load here and ``{name: reason}`` for those that do not."""
    ok, missing = [], {}
    for name in names:
        try:
            worker_cached(f"landmarks:{name}", lambda n=name: create_landmark_model(n))
            ok.append(name)
        except (ModelUnavailable, KeyError, ImportError) as err:
            missing[name] = str(err)
    return ok, missing


def label_video(video_id: str, clip_path: str | Path, boxes: list[list[float]], models: list[str]) -> dict[str, Any]:
    """Return ``{"status": video_status row, "rows": landmarks rows}``; never raises for a bad video.

    ``boxes[k]`` is the main-face box of clip frame ``k``.
    """
    started = time.monotonic()
    status: dict[str, Any] = {"stage": "label", "video_id": video_id}
    rows: list[dict[str, Any]] = []
    try:
        adapters = [worker_cached(f"landmarks:{n}", lambda n=n: create_landmark_model(n)) for n in models]
        n_frames = 0
        for frame in iter_frames(clip_path, 0, len(boxes)):
            box = np.asarray(boxes[frame.index], np.float32)
            for model in adapters:
                points, confidence = model.predict(frame.rgb, box)
                try:
                    wflw, mask = to_wflw98(points, model.scheme)
                except KeyError:  # a scheme without a map still gets its native points recorded
                    wflw, mask = np.full((98, 2), np.nan, np.float32), np.zeros(98, bool)
                rows.append({
                    "video_id": video_id, "frame": frame.index, "model": model.name, "family": model.family,
                    "scheme": model.scheme, "points": points, "confidence": confidence,
                    "wflw98": np.nan_to_num(wflw, nan=0.0), "mask": mask,
                })
            n_frames += 1
        if n_frames != len(boxes):
            raise ValueError(f"clip has {n_frames} frames but the faces manifest has {len(boxes)}")
        status.update(status="ok", error=None, n_frames=n_frames)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        status.update(status="decode_error", error=f"{clip_path}: {err}")
        rows = []
    except (ModelUnavailable, RuntimeError) as err:
        status.update(status="model_error", error=f"{type(err).__name__}: {err}")
        rows = []
    status["seconds"] = round(time.monotonic() - started, 3)
    return {"status": status, "rows": rows}
