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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ldeq.geometry import apply_affine
from ldeq.wflw import FLIP_PERMUTATION, INTEROCULAR
from pipeline.cluster import worker_cached
from pipeline.landmarks.adapters import BoxMap, CropMode, LandmarkModel, create_landmark_model
from pipeline.landmarks.fivepoint import FIVE_POINT_MODELS, create_five_point_model
from pipeline.landmarks.schemes import SchemeMap, scheme_map
from pipeline.models_store import MODEL_FILES, ModelUnavailable
from pipeline.video import frame_rgb

__all__ = ["available_models", "create_model", "model_licence", "label_video", "checked_label", "CheckedLabel",
           "tta_points", "SelfChecks", "NO_CHECKS", "CONTEXT"]

log = logging.getLogger(__name__)

#: Canvas side / face-box side: covers the detectors' 2× crop and MediaPipe's 1.5× crop at any rotation (1.5 √2).
CONTEXT = 2.2
#: WFLW-98's pupils: the self-checks' normaliser for schemes without eye corners.
PUPILS = (96, 97)
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
        except (ModelUnavailable, KeyError, ImportError, RuntimeError, MemoryError, OSError) as err:
            from pipeline.runcache import failure_status  # one reading of failures for every stage

            missing[name] = failure_status(err, f"model {name}")["error"]
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


@dataclass(frozen=True)
class SelfChecks:
    """The truth-free self-checks every model runs per frame, and which passes its label averages.

    Attributes:
        mirror: also label the mirrored canvas (box mirrored), mapped back and left/right-permuted.
        jitter_boxes: known perturbations ``(dx, dy, scale, angle)``: the box centre shifted by ``(dx, dy)`` × its
            sides, its sides scaled, the canvas turned by ``angle`` degrees about it (warp equivariance).
        tta: model name (or ``"default"``) → ``none`` | ``mirror`` | ``mirror_jitter``: the passes averaged into
            the stored WFLW-98 label.
    """

    mirror: bool = True
    jitter_boxes: tuple[tuple[float, float, float, float], ...] = ()
    tta: dict[str, str] = field(default_factory=lambda: {"default": "none"})

    def mode(self, model: str) -> str:
        return self.tta.get(model, self.tta.get("default", "none"))


#: No self-check passes: one pass per model, as the label stage ran before the checks (benchmarks compare).
NO_CHECKS = SelfChecks(mirror=False)


@dataclass(frozen=True)
class CheckedLabel:
    """One model's label of one frame with its self-checks (WFLW-98 points in frame pixels)."""

    native: np.ndarray  # (K, 2) the model's own points from the box as given (frame pixels)
    confidence: float | None
    wflw98: np.ndarray  # (98, 2) the label: the passes of the model's TTA mode averaged
    mirror: float  # mean distance of the plain and the mirrored pass over the points, inter-ocular units (NaN: off)
    jitter: float  # mean distance of the jittered passes from the plain one (NaN: off)
    passes: dict[str, list[np.ndarray]]  # "plain", "mirror", "jitter": each pass's WFLW-98 points (benchmarks)


def tta_points(passes: dict[str, list[np.ndarray]], mode: str, mask: np.ndarray) -> np.ndarray:
    """The label of TTA ``mode`` from the passes: the plain pass (``none``), averaged with the mirrored one
    (``mirror``) and the jittered ones (``mirror_jitter``); points outside ``mask`` are 0."""
    use = passes["plain"] + (passes["mirror"] if mode in ("mirror", "mirror_jitter") else []) \
        + (passes["jitter"] if mode == "mirror_jitter" else [])
    wflw = np.mean(use, axis=0).astype(np.float32)
    wflw[~mask] = 0.0
    return wflw


def _distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray, scale: float) -> float:
    if not (np.isfinite(scale) and scale > 0):
        return float("nan")
    return float(np.linalg.norm(a[mask] - b[mask], axis=-1).mean() / scale)


def _warped_predict(adapter: LandmarkModel, canvas: np.ndarray, box: np.ndarray, angle: float) -> np.ndarray:
    """The model's points on ``canvas`` turned by ``angle`` degrees about the box centre, mapped back (a known warp:
    an equivariant model gives the same points)."""
    if angle == 0.0:
        return adapter.predict(canvas, box)[0]
    centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    turned = cv2.warpAffine(canvas, turn, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    points, _ = adapter.predict(turned, box)
    return apply_affine(points.astype(np.float64), cv2.invertAffineTransform(turn))


def checked_label(adapter: LandmarkModel, smap: SchemeMap, canvas: np.ndarray, box: np.ndarray,
                  to_frame: np.ndarray, checks: SelfChecks) -> CheckedLabel | None:
    """Label ``canvas`` from ``box`` (canvas pixels) with ``adapter`` and run its self-checks; None where the
    model finds no face.

    The mirror pass flips the canvas about its centre column (pixel centres at integers, as every adapter cuts
    its crop), so a model that treats both sides of a face alike gives the same points back after the flip and the
    scheme's left/right permutation: what it gives instead is its orientation bias. Jitter passes measure how much
    a small, known change of the box moves the points.
    """
    def to_wflw(native: np.ndarray) -> np.ndarray:
        frame_pts = apply_affine(native.astype(np.float64), to_frame)
        return np.asarray(smap.weights @ frame_pts)

    native, confidence = adapter.predict(canvas, box)
    if not np.isfinite(native).all():
        return None
    native_frame = apply_affine(native.astype(np.float64), to_frame).astype(np.float32)
    base = to_wflw(native)
    mask = smap.mask
    # inter-ocular units; a scheme without the outer eye corners (a detector's 5 points) uses its pupils instead
    a, b = INTEROCULAR if mask[INTEROCULAR[0]] and mask[INTEROCULAR[1]] else PUPILS
    scale = float(np.linalg.norm(base[b] - base[a])) if mask[a] and mask[b] else float("nan")
    passes: dict[str, list[np.ndarray]] = {"plain": [base], "mirror": [], "jitter": []}
    mirror, jitter = float("nan"), float("nan")
    if checks.mirror:
        width = canvas.shape[1]
        flipped = np.ascontiguousarray(canvas[:, ::-1])
        x1, y1, x2, y2 = (float(v) for v in box)
        mirrored, _ = adapter.predict(flipped, np.array([width - 1 - x2, y1, width - 1 - x1, y2], np.float32))
        if np.isfinite(mirrored).all():
            back = mirrored.astype(np.float64)
            back[:, 0] = width - 1 - back[:, 0]
            unflipped = to_wflw(back)[FLIP_PERMUTATION]
            mirror = _distance(base, unflipped, mask, scale)
            passes["mirror"].append(unflipped)
    for dx, dy, side, angle in checks.jitter_boxes:
        points = _warped_predict(adapter, canvas, BoxMap(dx, dy, side, side)(box), angle)
        if np.isfinite(points).all():
            passes["jitter"].append(to_wflw(points))
    if passes["jitter"]:
        jitter = float(np.mean([_distance(base, p, mask, scale) for p in passes["jitter"]]))
    wflw = tta_points(passes, checks.mode(adapter.name), mask)
    return CheckedLabel(native_frame, confidence, wflw, mirror, jitter, passes)


def label_video(video_id: str, clip_path: str | Path, boxes: list[list[float]] | np.ndarray, models: list[str],
                valid: list[bool] | np.ndarray | None = None,
                rolls: list[float | None] | np.ndarray | None = None, crop: CropMode | None = None,
                checks: SelfChecks = NO_CHECKS) -> dict[str, Any]:
    """Return ``{"status": video_status row, "rows": landmarks rows}``; never raises for a bad video.

    ``boxes[k]`` is the main-face box of clip frame ``k``; models run only where ``valid[k]`` (default: where the box
    is finite). ``rolls[k]`` (degrees, NaN/None unknown) is the faces stage's head roll, used to cut the canvas
    upright; where it is unknown the previous labelled frame's roll is used. A model that finds no face in a frame
    (a detector missing it) gives no row there. ``crop`` overrides every model's crop mode (benchmarks compare
    them); None uses the modes stored in ``conventions.json``. ``checks``: the self-checks each model runs per frame
    (their disagreements are stored per row) and the passes its label averages.
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
                    label = checked_label(adapter, smap, canvas, local, to_frame, checks)
                    if label is None:
                        continue
                    if smap.mask[INTEROCULAR[0]] and smap.mask[INTEROCULAR[1]]:
                        frame_rolls.append(_roll_of(label.wflw98))
                    rows.append({"video_id": video_id, "frame": index, **info, "points": label.native,
                                 "confidence": label.confidence, "wflw98": label.wflw98, "mask": smap.mask,
                                 "mirror_disagreement": label.mirror, "jitter_disagreement": label.jitter})
                if frame_rolls:
                    prev_roll = float(np.median(frame_rolls))
        if n_frames != n:
            raise ValueError(f"clip has {n_frames} frames but the faces manifest has {n}")
        status.update(status="ok", error=None, n_frames=n_frames)
    except (av.error.FFmpegError, OSError, ValueError, IndexError, RuntimeError, MemoryError) as err:
        from pipeline.runcache import failure_status  # media it cannot decode is a fact; a model, memory or the file
        # system failing (ModelUnavailable is a RuntimeError) is a fault of this run, reported and never stored

        status.update(failure_status(err, clip_path))
        rows = []
    status["seconds"] = round(time.monotonic() - started, 3)
    return {"status": status, "rows": rows}
