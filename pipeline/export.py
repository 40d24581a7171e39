"""Export to the official WFLW-V layout: ``bboxes/<id>.npy``, ``landmarks/<id>.npy``, ``videos/<id>.mp4``.

One addition to the official layout: ``valid/<id>.npy`` (F,) bool marks the frames whose labels can be trusted (box
valid, model families agree on most points, no collapse). Invalid frames stay in ``bboxes``/``landmarks`` (NaN where
nothing was measured) so frame ``k`` of every array is clip frame ``k``; readers must skip frames where ``valid`` is
False.

A second addition: ``uncertainty/<id>.npy`` (F,) float32, each valid frame's uncertainty (the per-video score's
formula applied to that frame's components, :func:`frame_uncertainty`; NaN on invalid frames).

The split travels with the export, as the official release ships it: ``hard_video_IDs.txt`` and
``easy_video_IDs.txt`` (one video id per line, the official lists' format), and ``split_uncertainty.csv`` with the
uncertainty and its components that ranked each listed video (:func:`write_split`).

``python -m pipeline.export fiftyone <name>`` loads the export into a FiftyOne video dataset
(:mod:`pipeline.fiftyone_export`; the optional extra ``pip install .[fiftyone]``).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.manifest import atomic_path, read_table
from pipeline.params import ScoreParams
from pipeline.sources import safe_video_id
from pipeline.uncertainty import aggregate

__all__ = ["export_wflw_v", "load_wflw_v", "write_split", "frame_uncertainty", "SPLIT_LISTS", "SPLIT_TABLE", "main"]

log = logging.getLogger(__name__)

#: The split's list files, named as in the official WFLW-V release.
SPLIT_LISTS = {"hard": "hard_video_IDs.txt", "easy": "easy_video_IDs.txt"}
#: Beside the lists: why each video is where it is (one row per listed video).
SPLIT_TABLE = "split_uncertainty.csv"
_SPLIT_COLUMNS = ("video_id", "subset", "rank", "uncertainty", "disagreement", "instability", "confidence",
                  "valid_share", "n_frames")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, array)


def export_wflw_v(root: Path, video_id: str, boxes: np.ndarray, landmarks: np.ndarray, clip: Path,
                  valid: np.ndarray | None = None, uncertainty: np.ndarray | None = None) -> None:
    """Write one video in the layout LDEQ's ``test_LDEQ_WFLW_V.py`` reads, plus the per-frame ``valid`` flags.

    Args:
        boxes: (F, 4) float32 x1, y1, x2, y2 pixels (NaN where the face box is unknown).
        landmarks: (F, 98, 2) float32 WFLW-98 pixels (NaN where no model labelled the frame).
        clip: the trimmed clip; hard-linked when possible (same file system), else copied.
        valid: (F,) bool; None means every frame is valid.
        uncertainty: (F,) per-frame uncertainty (:func:`frame_uncertainty`), written as ``uncertainty/<id>.npy``;
            None writes none.
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
    if uncertainty is not None:
        values = np.asarray(uncertainty, np.float32)
        if values.shape != (len(boxes),):
            raise ValueError(f"{video_id}: {values.shape} uncertainty values for {len(boxes)} frames")
        _save_npy(root / "uncertainty" / f"{video_id}.npy", values)
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


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def write_split(root: Path, scores: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Write the hard/easy lists and ``split_uncertainty.csv`` of the videos exported under ``root``.

    ``scores`` is the score stage's manifest (its ``subset`` and ``rank`` chose the split). Each list holds the ids in
    rank order (rank 1 = most uncertain), one per line like the official lists; a video of a subset whose export is
    missing (annotate failed on it) is left out of the lists with a warning, so every listed id can be read.
    Returns ``{"hard": ids, "easy": ids}``.
    """
    rows = sorted((r for r in read_table(scores, "scores").to_pylist() if r["subset"] in SPLIT_LISTS),
                  key=lambda r: r["rank"])
    listed = []
    for r in rows:
        vid = safe_video_id(r["video_id"])
        if all((root / kind / f"{vid}.npy").is_file() for kind in ("bboxes", "landmarks")):
            listed.append(r)
        else:
            log.warning("split: %s (%s) is not in the export %s: left out of the lists", vid, r["subset"], root)
    split = {subset: [r["video_id"] for r in listed if r["subset"] == subset] for subset in SPLIT_LISTS}
    for subset, name in SPLIT_LISTS.items():
        with atomic_path(root / name) as tmp:
            tmp.write_text("".join(f"{vid}\n" for vid in split[subset]))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_SPLIT_COLUMNS)
    writer.writerows([_cell(r[c]) for c in _SPLIT_COLUMNS] for r in listed)
    with atomic_path(root / SPLIT_TABLE) as tmp:
        tmp.write_text(text.getvalue())
    return split



def frame_uncertainty(score_row: Mapping[str, Any], params: ScoreParams, n_frames: int) -> np.ndarray:
    """(``n_frames``,) per-frame uncertainty of a ``scores`` row: the per-video score's formula
    (:func:`pipeline.uncertainty.aggregate`, weights ``score.weights``) applied to each valid frame's components
    (every ``frame_<component>`` list of the row); NaN on frames that are not valid, and everywhere when the row does
    not cover ``n_frames`` frames (a score of another clip)."""
    out = np.full(n_frames, np.nan, np.float32)
    flags = score_row.get("frame_valid")
    if flags is None or len(flags) != n_frames:
        return out
    parts = {name.removeprefix("frame_"): np.asarray(values, np.float64) for name, values in score_row.items()
             if name.startswith("frame_") and name != "frame_valid" and values is not None and len(values) == n_frames}
    for k in np.flatnonzero(np.asarray(flags, bool)):
        components = {"disagreement": math.nan, "instability": math.nan, "confidence": math.nan,
                      **{name: values[k] for name, values in parts.items()}, "valid_share": 1.0}
        out[k] = aggregate(components, params)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export",
                                     description="Load the built export into other tools.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fo = sub.add_parser("fiftyone", help="a FiftyOne video dataset of the export (pip install .[fiftyone])")
    fo.add_argument("name", help="the FiftyOne dataset name")
    fo.add_argument("--export-dir", type=Path, default=None,
                    help="the export folder (default: annotate.export_dir of --params)")
    fo.add_argument("--params", default="params.yaml", help="params file naming the export (default: %(default)s)")
    fo.add_argument("--overwrite", action="store_true", help="replace a FiftyOne dataset of that name")
    args = parser.parse_args(argv)
    from pipeline.fiftyone_export import FiftyOneUnavailable, build_dataset
    from pipeline.params import ParamsError, stage_params

    try:
        root = args.export_dir or Path(stage_params("annotate", args.params).export_dir)
        summary = build_dataset(root, args.name, overwrite=args.overwrite)
    except (FiftyOneUnavailable, ParamsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"fiftyone dataset {args.name!r}: {summary['samples']} videos ({summary['frames']} frames) from {root}; "
          f"open it with: python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('{args.name}')).wait()\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
