"""Pictures of the labels on the video: a render per video (mp4, animated WebP or GIF) and contact sheets (PNG).

A render shows every clip frame with the main-face box (coloured by how the faces stage got it), every landmark
model's WFLW-98 points (one colour per model family), the consensus (white where the frame is valid, red where not),
and a strip below with the frame's validity, its uncertainty and the video's uncertainty timeline. A contact sheet
tiles face crops of chosen frames (the hard subset's worst, the easy subset's best) drawn the same way.

Everything is read per video straight from the manifests (Parquet filters), so any video can be rendered on demand:
consensus and validity come from the annotations when the video was selected, otherwise they are computed the way the
annotate stage computes them (:func:`pipeline.uncertainty.video_labels`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest import ManifestError, atomic_path, boxes_array, points_array
from pipeline.params import ScoreParams
from pipeline.schemas import SCHEMA_VERSION, valid_flags
from pipeline.uncertainty import aggregate, model_points, video_labels
from pipeline.video import VideoWriter, iter_frames, read_frames

__all__ = ["Overlay", "FAMILY_COLOURS", "family_colour", "read_video_rows", "frame_uncertainty", "load_overlay",
           "draw_frame", "render_video", "pick_frames", "contact_sheet", "RENDER_SUFFIXES"]

#: RGB colour of each known landmark family; other families (the face detectors' 5 points) get a stable colour
#: from :data:`_PALETTE` by name.
FAMILY_COLOURS: dict[str, tuple[int, int, int]] = {
    "dlib_ert": (255, 160, 0),
    "mediapipe_mesh": (0, 190, 255),
    "faceapi_cnn": (255, 70, 200),
    "insightface": (120, 230, 60),
}
_PALETTE = [(250, 230, 40), (160, 110, 255), (40, 220, 170), (255, 110, 90), (150, 200, 255), (200, 150, 90)]
CONSENSUS_VALID = (255, 255, 255)
CONSENSUS_INVALID = (255, 50, 50)
#: Box colour per faces-stage ``source`` (schemas.py): trusted sources green-ish, held and none warm.
BOX_COLOURS = {"detected": (60, 220, 60), "landmarks": (0, 200, 200), "interpolated": (230, 230, 0),
               "held": (255, 140, 0), "none": (255, 50, 50)}
RENDER_SUFFIXES = (".mp4", ".webp", ".gif")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL = 46  # px, the strip under each rendered frame


def family_colour(family: str) -> tuple[int, int, int]:
    """The drawing colour of a model family (stable across runs and machines)."""
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    digest = int(hashlib.sha256(family.encode()).hexdigest(), 16)
    return _PALETTE[digest % len(_PALETTE)]


@dataclass(frozen=True)
class Overlay:
    """What is drawn on one video's frames (arrays indexed by clip frame)."""

    video_id: str
    clip: str
    fps: float
    boxes: np.ndarray  # (F, 4), NaN where no box
    box_source: tuple[str, ...]  # (F,) faces-stage source, "none" where unknown
    models: tuple[tuple[str, str, np.ndarray], ...]  # (model, family, (F, 98, 2) NaN where undefined)
    consensus: np.ndarray  # (F, 98, 2), NaN where no label
    valid: np.ndarray  # (F,) bool
    uncertainty: np.ndarray  # (F,) NaN where the frame is not scored
    subset: str | None
    rank: int | None
    score: float | None

    @property
    def n_frames(self) -> int:
        return len(self.boxes)


def read_video_rows(path: Path, name: str, video_id: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The rows of one video in manifest ``name`` at ``path`` (sorted by frame where there is one), or ``None`` when
    the file does not exist. Only that video's rows are read (Parquet filter), so large manifests stay cheap."""
    if not path.is_file():
        return None
    try:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
        if meta.get("manifest") != name:
            raise ManifestError(f"{path}: expected a {name!r} manifest, found {meta.get('manifest')!r}")
        if meta.get("schema_version", "").split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ManifestError(f"{path}: schema version {meta.get('schema_version')} is not compatible with "
                                f"{SCHEMA_VERSION}")
        table = pq.read_table(path, columns=list(columns) if columns else None,
                              filters=[("video_id", "=", video_id)])
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(f"{path}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
    return table.sort_by("frame") if "frame" in table.column_names else table


def frame_uncertainty(row: dict, params: ScoreParams) -> np.ndarray:
    """Per-frame uncertainty of a ``scores`` row: the per-video formula (:func:`pipeline.uncertainty.aggregate`)
    applied to each valid frame's components; NaN on frames that are not valid (they are not scored)."""
    flags = row.get("frame_valid")
    valid = np.zeros(0, bool) if flags is None else np.asarray(flags, bool)
    out = np.full(len(valid), np.nan)
    parts = {k: np.full(len(valid), np.nan) if row.get(f"frame_{k}") is None
             else np.asarray(row[f"frame_{k}"], np.float64) for k in ("disagreement", "instability", "confidence")}
    for k in np.flatnonzero(valid):
        out[k] = aggregate({"disagreement": parts["disagreement"][k], "instability": parts["instability"][k],
                            "confidence": parts["confidence"][k], "valid_share": 1.0}, params)
    return out


def load_overlay(video_id: str, manifests: Path, params: ScoreParams) -> Overlay:
    """Everything drawn on one video, from ``manifests/{clips,faces,landmarks,annotations,scores}.parquet``.

    Only the clips manifest (and the clip itself) is required; what else is missing is simply not drawn. Raises
    :class:`~pipeline.manifest.ManifestError` naming the file when the video has no usable clip.
    """
    clips_path = manifests / "clips.parquet"
    clips = read_video_rows(clips_path, "clips", video_id)
    if clips is None:
        raise ManifestError(f"{clips_path}: manifest not found (run the trim stage)")
    if len(clips) == 0:
        raise ManifestError(f"{clips_path}: no video {video_id!r}")
    clip = clips.to_pylist()[0]
    if clip["status"] != "ok" or not clip["path"]:
        raise ManifestError(f"{clips_path}: video {video_id!r} has no clip (status {clip['status']}: {clip['error']})")
    n = int(clip["n_frames"])
    frames = np.arange(n)
    faces = read_video_rows(manifests / "faces.parquet", "faces", video_id)
    boxes = np.full((n, 4), np.nan, np.float32)
    sources = ["none"] * n
    if faces is not None and len(faces):
        idx = np.asarray(faces.column("frame").to_numpy(), np.int64)
        keep = idx < n
        boxes[idx[keep]] = boxes_array(faces)[keep]
        for k, s in zip(idx[keep], np.asarray(faces.column("source").to_pylist(), object)[keep]):
            sources[k] = str(s)
    landmarks = read_video_rows(manifests / "landmarks.parquet", "landmarks", video_id)
    models: tuple[tuple[str, str, np.ndarray], ...] = ()
    if landmarks is not None and len(landmarks):
        _mp = model_points(landmarks, frames)
        pts, names, families = _mp.points, _mp.models, _mp.families
        models = tuple((m, f, pts[:, i]) for i, (m, f) in enumerate(zip(names, families)))
    consensus = np.full((n, 98, 2), np.nan, np.float32)
    valid = np.zeros(n, bool)
    ann = read_video_rows(manifests / "annotations.parquet", "annotations", video_id)
    if ann is not None and len(ann):
        idx = np.asarray(ann.column("frame").to_numpy(), np.int64)
        consensus[idx] = points_array(ann.column("landmarks"))
        valid[idx] = valid_flags(ann)
    elif landmarks is not None and len(landmarks) and faces is not None and len(faces) == n:
        labels = video_labels(landmarks, params, faces)  # what the annotate stage would write for this video
        consensus, valid = labels.points.astype(np.float32), labels.valid.astype(bool)
    scores = read_video_rows(manifests / "scores.parquet", "scores", video_id)
    score_row = scores.to_pylist()[0] if scores is not None and len(scores) else {}
    uncertainty = (frame_uncertainty(score_row, params) if score_row.get("frame_valid") is not None
                   else np.full(n, np.nan))
    if len(uncertainty) != n:
        uncertainty = np.resize(np.r_[uncertainty, np.full(n, np.nan)], n)
    return Overlay(video_id=video_id, clip=str(clip["path"]), fps=float(clip["fps"] or 25.0), boxes=boxes,
                   box_source=tuple(sources), models=models, consensus=consensus, valid=valid,
                   uncertainty=uncertainty, subset=score_row.get("subset"), rank=score_row.get("rank"),
                   score=score_row.get("uncertainty"))


def _dot(img: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int,
         edge: tuple[int, int, int] | None = None) -> None:
    for x, y in points[np.isfinite(points).all(axis=1)]:
        centre = (int(round(x)), int(round(y)))
        if edge is not None:
            cv2.circle(img, centre, radius + 1, edge, -1, cv2.LINE_AA)
        cv2.circle(img, centre, radius, colour, -1, cv2.LINE_AA)


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float = 0.42) -> None:
    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)  # dark outline: readable on any frame
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def draw_frame(rgb: np.ndarray, ov: Overlay, k: int, scale: float = 1.0, panel: bool = True) -> np.ndarray:
    """Frame ``k`` of ``ov`` (RGB uint8, as decoded) with box, model points, consensus and, with ``panel``, the
    strip of validity, uncertainty, timeline and legend under it. ``scale`` resizes the frame before drawing."""
    # drawing is in place: work on a copy, never on the caller's decoded frame
    img = rgb.copy() if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    radius = max(1, int(round(1.6 * scale)))
    box = ov.boxes[k] * scale
    if np.isfinite(box).all():
        colour = BOX_COLOURS.get(ov.box_source[k], (255, 255, 255))
        cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), colour, 2, cv2.LINE_AA)
        _text(img, ov.box_source[k], (int(box[0]) + 3, max(12, int(box[1]) - 4)), colour, 0.4)
    for _, family, pts in ov.models:
        _dot(img, pts[k] * scale, family_colour(family), radius)
    _dot(img, ov.consensus[k] * scale, CONSENSUS_VALID if ov.valid[k] else CONSENSUS_INVALID, radius, (0, 0, 0))
    if not panel:
        return img
    h, w = img.shape[:2]
    legend = _legend_layout(ov, w)
    extra_lines = max((item[0] for item in legend), default=0)
    strip = np.full((_PANEL + 14 * extra_lines, w, 3), 24, np.uint8)
    u = ov.uncertainty[k]
    status = "VALID" if ov.valid[k] else "INVALID"
    head = f"{ov.video_id}  frame {k}/{ov.n_frames - 1}  "
    _text(strip, head, (4, 13), (230, 230, 230))
    x0 = 4 + cv2.getTextSize(head, _FONT, 0.42, 1)[0][0]
    _text(strip, status, (x0, 13), (80, 230, 80) if ov.valid[k] else CONSENSUS_INVALID)
    tail = f"  u={u:.3f}" if np.isfinite(u) else "  u=n/a"
    if ov.subset:
        tail += f"  {ov.subset} #{ov.rank}"
    _text(strip, tail, (x0 + cv2.getTextSize(status, _FONT, 0.42, 1)[0][0], 13), (230, 230, 230))
    _timeline(strip, ov, k, (4, 18, w - 4, 30))
    for line, x, _, name, colour in legend:
        y = 39 + 14 * line
        cv2.circle(strip, (x + 4, y), 4, colour, -1, cv2.LINE_AA)
        _text(strip, name, (x + 11, y + 4), colour, 0.36)
    return np.concatenate([img, strip])


def _legend_layout(ov: Overlay, width: int) -> list[tuple[int, int, int, str, tuple[int, int, int]]]:
    """(line, x, item width, name, colour) of each legend entry, wrapped to ``width`` (same for every frame)."""
    items = [("consensus", CONSENSUS_VALID)] + [(f, family_colour(f)) for f in
                                                dict.fromkeys(f for _, f, _ in ov.models)]
    out, line, x = [], 0, 4
    for name, colour in items:
        size = 18 + cv2.getTextSize(name, _FONT, 0.36, 1)[0][0]
        if x > 4 and x + size > width:
            line, x = line + 1, 4
        out.append((line, x, size, name, colour))
        x += size
    return out


def _timeline(strip: np.ndarray, ov: Overlay, k: int, rect: tuple[int, int, int, int]) -> None:
    """Per-frame uncertainty as bars (invalid frames red ticks) with a cursor at frame ``k``."""
    x0, y0, x1, y1 = rect
    cv2.rectangle(strip, (x0, y0), (x1, y1), (60, 60, 60), -1)
    n = ov.n_frames
    finite = ov.uncertainty[np.isfinite(ov.uncertainty)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    for j in range(n):
        a = x0 + int((x1 - x0) * j / n)
        b = max(a + 1, x0 + int((x1 - x0) * (j + 1) / n))
        if not ov.valid[j]:
            cv2.rectangle(strip, (a, y0), (b - 1, y1), (120, 30, 30), -1)
        elif np.isfinite(ov.uncertainty[j]):
            height = int((y1 - y0) * ov.uncertainty[j] / top)
            cv2.rectangle(strip, (a, y1 - height), (b - 1, y1), (200, 200, 90), -1)
    cx = x0 + int((x1 - x0) * (k + 0.5) / n)
    cv2.line(strip, (cx, y0 - 1), (cx, y1 + 1), (255, 255, 255), 1)


def render_video(ov: Overlay, out: str | Path, max_side: int = 480, frames: Sequence[int] | None = None) -> Path:
    """Write ``ov`` drawn on its clip frames (every one, or ``frames``) to ``out``: ``.mp4`` (H.264), ``.webp`` or
    ``.gif`` (animated).

    Frames are scaled so that their longer side is at most ``max_side`` px (> 0). The file appears atomically.
    """
    out = Path(out)
    if out.suffix.lower() not in RENDER_SUFFIXES:
        raise ValueError(f"{out}: unsupported render format {out.suffix!r}; use one of {list(RENDER_SUFFIXES)}")
    if max_side <= 0:
        raise ValueError(f"{out}: max_side {max_side} px: must be positive")
    wanted = set(range(ov.n_frames)) if frames is None else set(frames)
    if not wanted or min(wanted) < 0 or max(wanted) >= ov.n_frames:
        raise ValueError(f"{out}: frames must be a non-empty subset of 0..{ov.n_frames - 1}")
    drawn: list[np.ndarray] = []
    writer: VideoWriter | None = None
    if out.suffix.lower() == ".mp4":
        writer = VideoWriter(out, fps=ov.fps, crf=23, preset="veryfast").__enter__()
    try:
        for frame in iter_frames(ov.clip, min(wanted), max(wanted) + 1):
            if frame.index not in wanted:
                continue
            h, w = frame.rgb.shape[:2]
            img = draw_frame(frame.rgb, ov, frame.index, min(1.0, max_side / max(h, w)))
            img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]  # even sides for yuv420p
            if writer is not None:
                writer.write(img)
            else:
                drawn.append(img)
    except BaseException as err:
        if writer is not None:
            writer.__exit__(type(err), err, err.__traceback__)
        raise
    if writer is not None:
        writer.__exit__(None, None, None)
        return out
    if not drawn:
        raise ValueError(f"{ov.clip}: no frame decoded")
    from PIL import Image

    images = [Image.fromarray(img) for img in drawn]
    duration = int(round(1000 / ov.fps)) if ov.fps > 0 else 40
    fmt = "WEBP" if out.suffix.lower() == ".webp" else "GIF"
    options = {"quality": 60, "method": 4} if fmt == "WEBP" else {"optimize": False}
    with atomic_path(out) as tmp:
        images[0].save(tmp, format=fmt, save_all=True, append_images=images[1:], duration=duration, loop=0,
                       **options)
    return out


def pick_frames(uncertainty: dict[str, np.ndarray], n: int, worst: bool, per_video: int = 2) -> list[tuple[str, int]]:
    """``(video_id, frame)`` of the ``n`` frames of highest (``worst``) or lowest per-frame uncertainty, at most
    ``per_video`` from one video (a sheet of one video's neighbouring frames says little); only scored frames count.
    Ties break by video id and frame, so the choice is deterministic."""
    candidates = []
    for video_id, values in uncertainty.items():
        values = np.asarray(values, np.float64)
        scored = np.flatnonzero(np.isfinite(values))
        order = scored[np.argsort(-values[scored] if worst else values[scored], kind="stable")]
        candidates += [(float(values[k]), video_id, int(k)) for k in order[:per_video]]
    candidates.sort(key=lambda c: ((-c[0] if worst else c[0]), c[1], c[2]))
    return [(video_id, k) for _, video_id, k in candidates[:n]]


def _face_crop(img: np.ndarray, box: np.ndarray, tile: int) -> np.ndarray:
    """A square crop of ``img`` around ``box`` (1.8× its side, padded black outside the frame) resized to ``tile``."""
    h, w = img.shape[:2]
    if np.isfinite(box).all() and box[2] > box[0]:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = 1.8 * max(box[2] - box[0], box[3] - box[1])
    else:
        cx, cy, side = w / 2, h / 2, max(h, w)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(int(round(side)), 1)
    canvas = np.zeros((s, s, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (tile, tile), interpolation=cv2.INTER_AREA)


def contact_sheet(picks: Sequence[tuple[Overlay, int]], out: str | Path, title: str, cols: int = 4,
                  tile: int = 240) -> Path:
    """A PNG grid of face crops of ``picks`` (overlay, frame), each captioned with video, frame and uncertainty."""
    out = Path(out)
    if not picks:
        raise ValueError(f"{out}: no frame to put on the contact sheet")
    by_video: dict[str, list[int]] = {}
    for ov, k in picks:
        by_video.setdefault(ov.video_id, []).append(k)
    decoded: dict[tuple[str, int], np.ndarray] = {}
    for ov, _ in picks:
        if (ov.video_id, by_video[ov.video_id][0]) in decoded:
            continue
        wanted = sorted(set(by_video[ov.video_id]))
        for k, rgb in zip(wanted, read_frames(ov.clip, wanted)):
            decoded[(ov.video_id, k)] = rgb
    caption_h, head_h = 34, 30
    rows = math.ceil(len(picks) / cols)
    sheet = np.full((head_h + rows * (tile + caption_h), cols * tile, 3), 24, np.uint8)
    _text(sheet, title, (6, 20), (240, 240, 240), 0.55)
    for i, (ov, k) in enumerate(picks):
        r, c = divmod(i, cols)
        y, x = head_h + r * (tile + caption_h), c * tile
        rgb = decoded.get((ov.video_id, k))
        if rgb is not None:
            sheet[y: y + tile, x: x + tile] = _face_crop(draw_frame(rgb, ov, k, panel=False), ov.boxes[k], tile)
        u = ov.uncertainty[k]
        _text(sheet, ov.video_id[: tile // 8], (x + 4, y + tile + 13), (230, 230, 230), 0.38)
        _text(sheet, f"frame {k}  u={u:.3f}" + ("" if ov.valid[k] else "  INVALID"), (x + 4, y + tile + 28),
              (230, 230, 230) if ov.valid[k] else CONSENSUS_INVALID, 0.38)
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{out}: could not write the PNG")
    return out

