"""The embedded demo: longer source videos, each holding one clip window, made from real face media.

Still-based videos move a real photo under a seeded camera (pan, zoom, rotation, jitter) with lighting change,
blur, noise and a passing occluder, at difficulty levels 0-3. Because every warp is known, each clip frame has
ground truth: the face box and reference landmarks (measured once on the clean still by the pseudo-label models,
then carried through the warp). Videos made from the real 'carphone' sequence get the same photometric damage but
no geometric ground truth. Two deliberately broken sources (a missing file, a window past the end) show that one bad
video never stops a run.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.demo.media import Still, load_carphone, load_stills
from pipeline.landmarks.adapters import DlibERT68, LandmarkModel, MediaPipeFaceMesh
from pipeline.landmarks.consensus import consensus
from pipeline.landmarks.schemes import to_wflw98
from pipeline.manifest import atomic_path, write_rows
from pipeline.params import DemoParams
from pipeline.video import VideoWriter

__all__ = ["Difficulty", "LEVELS", "build_demo", "reference_landmarks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Difficulty:
    """Magnitudes of the camera motion and damage at one level."""

    pan_px: float
    zoom: float
    rotation_deg: float
    jitter_px: float
    light: float
    blur_sigma: float
    noise: float
    occlusion: float  # occluder side as a fraction of the face box; 0 = none


LEVELS = (
    Difficulty(8, 0.03, 2, 0.0, 0.00, 0.0, 0.0, 0.00),
    Difficulty(30, 0.10, 8, 1.0, 0.15, 0.8, 2.0, 0.00),
    Difficulty(60, 0.18, 15, 2.5, 0.30, 1.8, 4.0, 0.30),
    Difficulty(70, 0.25, 20, 4.0, 0.45, 3.0, 6.0, 0.40),
)


def reference_landmarks(still: Still, models: list[LandmarkModel]) -> np.ndarray:
    """WFLW-98 consensus of the pseudo-label ``models`` on the clean still (98, 2)."""
    points, masks = [], []
    for model in models:
        native, _ = model.predict(still.rgb, still.box)
        wflw, mask = to_wflw98(native, model.scheme)
        points.append(wflw)
        masks.append(mask)
    centre, _ = consensus(np.stack(points), np.stack(masks), [m.family for m in models])
    return centre


def _smooth_path(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth signal in [-1, 1] over n frames: two sinusoids with random frequency and phase."""
    t = np.arange(n) / max(n - 1, 1)
    f1, f2 = rng.uniform(0.4, 1.2), rng.uniform(1.0, 2.5)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    return 0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2)


def _damage(frame: np.ndarray, level: Difficulty, k: int, n: int, paths: dict[str, np.ndarray],
            rng: np.random.Generator, face_box: np.ndarray | None) -> np.ndarray:
    """Lighting, blur, occluder and sensor noise for frame k of n."""
    img = frame.astype(np.float32)
    img *= 1.0 + level.light * paths["light"][k]
    sigma = level.blur_sigma * max(0.0, paths["blur"][k])
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if level.occlusion > 0 and face_box is not None and n // 3 <= k < 2 * n // 3:
        x1, y1, x2, y2 = face_box
        side = level.occlusion * max(x2 - x1, y2 - y1)
        progress = (k - n // 3) / max(n // 3, 1)
        ox = x1 - side + progress * (x2 - x1 + side)
        oy = y1 + 0.35 * (y2 - y1)
        cv2.rectangle(img, (int(ox), int(oy)), (int(ox + side), int(oy + side)), (90.0, 110.0, 70.0), -1)
    if level.noise > 0:
        img += rng.normal(0, level.noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _still_video(still: Still, reference: np.ndarray, level: Difficulty, n: int, p: DemoParams,
                 rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Frames, GT boxes (n, 4) and GT landmarks (n, 98, 2) for a still moved by a seeded camera."""
    x1, y1, x2, y2 = still.box
    face_side = max(x2 - x1, y2 - y1)
    base_scale = rng.uniform(0.28, 0.36) * p.height / face_side
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    paths = {k: _smooth_path(rng, n) for k in ("px", "py", "zoom", "rot", "light", "blur")}
    jitter = rng.normal(0, level.jitter_px, (n, 2))
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
    frames, boxes, points = [], [], []
    for k in range(n):
        scale = base_scale * (1 + level.zoom * paths["zoom"][k])
        shift = np.array([p.width / 2 + level.pan_px * paths["px"][k], p.height / 2 + level.pan_px * paths["py"][k]])
        affine = cv2.getRotationMatrix2D(tuple(centre), level.rotation_deg * paths["rot"][k], scale)
        affine[:, 2] += shift + jitter[k] - centre
        warped = cv2.warpAffine(still.rgb, affine, (p.width, p.height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        moved = corners @ affine[:, :2].T + affine[:, 2]
        box = np.concatenate([moved.min(axis=0), moved.max(axis=0)])
        frames.append(_damage(warped, level, k, n, paths, rng, box))
        boxes.append(box)
        points.append(reference @ affine[:, :2].T + affine[:, 2])
    return frames, np.array(boxes, np.float32), np.array(points, np.float32)


def _carphone_video(carphone: np.ndarray, level: Difficulty, n: int, p: DemoParams,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Upscaled real carphone frames (ping-pong looped to n frames) with photometric damage only."""
    order = np.concatenate([np.arange(len(carphone)), np.arange(len(carphone) - 2, 0, -1)])
    offset = int(rng.integers(0, len(order)))
    paths = {k: _smooth_path(rng, n) for k in ("light", "blur")}
    scale = p.width / carphone.shape[2]
    frames = []
    for k in range(n):
        src = carphone[order[(offset + k) % len(order)]]
        big = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        top = max(0, (big.shape[0] - p.height) // 2)
        canvas = np.zeros((p.height, p.width, 3), np.uint8)
        crop = big[top:top + p.height, : p.width]
        canvas[: crop.shape[0], : crop.shape[1]] = crop
        frames.append(_damage(canvas, level, k, n, paths, rng, None))
    return frames


def _plan(n_clips: int, pool: list[str], rng: np.random.Generator) -> list[tuple[str, int]]:
    """Clip i gets level i % 4 and a media item that cycles through a per-level shuffle of the pool."""
    shuffles = [list(rng.permutation(pool)) for _ in LEVELS]
    return [(shuffles[i % len(LEVELS)][(i // len(LEVELS)) % len(pool)], i % len(LEVELS)) for i in range(n_clips)]


def build_demo(out_dir: Path, params: DemoParams, root: Path) -> dict[str, Any]:
    """Write ``raw/<id>.mp4`` source videos, ``sources.csv`` and ``truth.parquet`` under ``out_dir``.

    Returns a summary (counts per media and level).
    """
    out_dir, root = out_dir.resolve(), root.resolve()
    rng = np.random.default_rng(params.seed)
    stills = {s.name: s for s in load_stills()}
    models: list[LandmarkModel] = [DlibERT68(), MediaPipeFaceMesh()]  # loaded once for every still
    references = {name: reference_landmarks(s, models) for name, s in stills.items()}
    carphone = load_carphone()
    pool = sorted(stills) + ["carphone"]
    raw_dir = out_dir / "raw"
    sources, truth = [], []
    n = params.lead_frames + params.clip_frames + params.tail_frames
    for i, (media, level_index) in enumerate(_plan(params.n_clips, pool, rng)):
        video_id = f"demo{i:03d}_{media}_d{level_index}"
        level = LEVELS[level_index]
        clip_rng = np.random.default_rng([params.seed, i])
        if media == "carphone":
            frames, boxes, points = _carphone_video(carphone, level, n, params, clip_rng), None, None
        else:
            frames, boxes, points = _still_video(stills[media], references[media], level, n, params, clip_rng)
        with VideoWriter(raw_dir / f"{video_id}.mp4", fps=params.fps, crf=16) as out:
            for frame in frames:
                out.write(frame)
        start, end = params.lead_frames, params.lead_frames + params.clip_frames - 1
        sources.append([video_id, f"file:{(raw_dir / f'{video_id}.mp4').relative_to(root)}", start, end])
        for k in range(params.clip_frames):
            row: dict[str, Any] = {"video_id": video_id, "frame": k, "media": media, "difficulty": level_index,
                                   "has_truth": boxes is not None}
            if boxes is not None:
                row.update(dict(zip(("x1", "y1", "x2", "y2"), map(float, boxes[start + k]))),
                           landmarks=points[start + k])
            truth.append(row)
        log.info("built %s (%d frames, window %d..%d)", video_id, n, start, end)
    # Deliberately broken sources: they must end as status rows, never stop the run.
    first = sources[0][1]
    sources.append(["demo_missing_file", "file:" + str((raw_dir / "no_such_video.mp4").relative_to(root)), 0, 10])
    sources.append(["demo_window_past_end", first, n - 5, n + 20])
    with atomic_path(out_dir / "sources.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video_id", "url", "start_frame", "end_frame"])
        writer.writerows(sources)
    write_rows(truth, "demo_truth", out_dir / "truth.parquet")
    return {"clips": params.n_clips, "broken_sources": 2, "media": pool, "frames_per_source": n}
