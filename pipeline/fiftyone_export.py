"""The export as a FiftyOne video dataset: browse every clip with its 98 points, box, validity and uncertainty.

One sample per listed video (``videos/<id>.mp4``), tagged with its subset (``hard``/``easy``) and carrying
``video_id``, ``subset``, ``rank`` and the per-video ``uncertainty`` of ``split_uncertainty.csv``. Each frame (FiftyOne
numbers frames from 1: clip frame k is frame number k + 1) holds

* ``landmarks``: ``fo.Keypoints`` with one ``fo.Keypoint`` of the 98 WFLW points (relative coordinates, NaN where
  the frame has no label), drawn with the dataset's ``default_skeleton``: the 98 point names
  (:data:`ldeq.wflw.POINT_NAMES`) and edges along each region (contour, brows, nose, eyes, lips);
* ``box``: ``fo.Detection`` of the face box (absent where the box is unknown);
* ``valid`` (bool) and ``uncertainty`` (float, NaN on invalid frames).

FiftyOne is an optional extra (``pip install .[fiftyone]``); it keeps its datasets in its own MongoDB.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import av
import numpy as np

from ldeq.layout import LayoutError, load_video, split_ids
from ldeq.wflw import POINT_NAMES, REGION_POINTS

__all__ = ["FiftyOneUnavailable", "wflw_skeleton_edges", "build_dataset"]

#: Regions drawn as closed outlines; the others (contour, nose) are open chains, pupils single points.
_CLOSED = ("left_brow", "right_brow", "left_eye", "right_eye", "outer_lip", "inner_lip")


class FiftyOneUnavailable(RuntimeError):
    """fiftyone is not installed (or cannot start its database); the message says how to get it."""


def wflw_skeleton_edges() -> list[list[int]]:
    """Edges of the WFLW-98 skeleton: consecutive points of each region, closed where the region is an outline."""
    edges: list[list[int]] = []
    for region, points in REGION_POINTS.items():
        idx = list(points)
        if region == "pupils":
            continue
        edges += [[a, b] for a, b in zip(idx, idx[1:])]
        if region in _CLOSED:
            edges.append([idx[-1], idx[0]])
    return edges


def _fiftyone() -> Any:
    try:
        import fiftyone as fo
    except ImportError as err:
        raise FiftyOneUnavailable(f"fiftyone is not installed ({err.msg}): pip install '.[fiftyone]' (README: "
                                  "'Browse the export in FiftyOne')") from None
    return fo


def _video_facts(path: Path) -> tuple[int, int, float]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return int(stream.width), int(stream.height), float(stream.average_rate or 0.0)
    except (OSError, IndexError, av.error.FFmpegError) as err:
        raise LayoutError(f"{path}: cannot read the video ({err})") from None


def _split_table(root: Path) -> dict[str, dict[str, str]]:
    path = root / "split_uncertainty.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["video_id"]: row for row in csv.DictReader(fh)}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def build_dataset(root: str | Path, name: str, overwrite: bool = False) -> dict[str, int]:
    """Build the FiftyOne dataset ``name`` from the export under ``root``; returns ``{"samples", "frames"}``.

    Raises :class:`FiftyOneUnavailable` without fiftyone, :class:`ValueError` (one line) for an export with missing
    files or a dataset name already taken (unless ``overwrite``).
    """
    fo = _fiftyone()
    root = Path(root)
    ids = {v: s for s in ("hard", "easy") for v in split_ids(root, s)}
    videos = {v: load_video(root, v) for v in ids}  # every file checked before the database is touched
    missing = [str(v.video) for v in videos.values() if not v.video.is_file()]
    if missing:
        raise LayoutError(f"{missing[0]}: video file not found ({len(missing)} of {len(videos)} missing)")
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"fiftyone dataset {name!r} exists: pass --overwrite to replace it")
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    dataset.skeletons = {"landmarks": fo.KeypointSkeleton(labels=list(POINT_NAMES), edges=wflw_skeleton_edges())}
    dataset.default_skeleton = dataset.skeletons["landmarks"]
    dataset.info = {"source": str(root), "frame_numbers": "FiftyOne frame k + 1 = clip frame k",
                    "landmark_scheme": "wflw98"}
    table = _split_table(root)
    frames_total = 0
    samples = []
    for video_id, labels in videos.items():
        width, height, fps = _video_facts(labels.video)
        row = table.get(video_id, {})
        sample = fo.Sample(filepath=str(labels.video.resolve()), tags=[ids[video_id]], video_id=video_id,
                           subset=ids[video_id], rank=int(row["rank"]) if row.get("rank") else None,
                           uncertainty=_number(row.get("uncertainty")))
        sample.metadata = fo.VideoMetadata(frame_width=width, frame_height=height, frame_rate=fps,
                                           total_frame_count=labels.n_frames)
        scale = np.array([width, height], np.float64)
        for k in range(labels.n_frames):
            points = (labels.landmarks[k].astype(np.float64) / scale).tolist()
            frame = fo.Frame(landmarks=fo.Keypoints(keypoints=[fo.Keypoint(label="face", points=points)]),
                             valid=bool(labels.valid[k]),
                             uncertainty=float(labels.uncertainty[k]))
            box = labels.boxes[k].astype(np.float64)
            if np.isfinite(box).all():
                x1, y1, x2, y2 = box
                frame["box"] = fo.Detection(label="face", bounding_box=[x1 / width, y1 / height, (x2 - x1) / width,
                                                                         (y2 - y1) / height])
            sample.frames[k + 1] = frame
        frames_total += labels.n_frames
        samples.append(sample)
    dataset.add_samples(samples)
    dataset.persistent = True
    return {"samples": len(samples), "frames": frames_total}
