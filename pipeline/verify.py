"""Compare the rebuilt export with the official WFLW-V files a user has: ``python -m pipeline.verify <official>``.

Both folders are read in the WFLW-V layout (:mod:`ldeq.layout`): the ids of the official ``hard``/``easy`` lists
against ours, and for every video on both sides

* ``frames`` on each side (a difference means the clips are not the same frames: the window or the source differ);
* ``box_iou``: mean IoU of our face box with theirs over the frames where both are known;
* ``nme``: our labels against theirs, % of their inter-ocular distance, over our valid frames where theirs are finite;
* ``nmf``: LDEQ's normalised mean flicker of our labels against theirs, over the longest run of such frames.

It prints one summary line and writes a CSV with a row per video of either side (``--csv``, default
``verify.csv``): ``video_id, status, official_subset, our_subset, official_frames, our_frames, frames_compared,
box_iou, nme, nmf``; status is ``ok``, ``frame_count_differs``, ``missing_ours`` or ``missing_official``. A folder
that is not in the layout (a list, a listed video's landmarks or boxes missing, a wrong shape) is one ``error:`` line.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ldeq.evaluate import longest_valid_run
from ldeq.layout import SUBSETS, LayoutError, VideoLabels, load_video, split_ids
from ldeq.metrics import nme, nmf
from pipeline.manifest import atomic_path

__all__ = ["compare_folders", "compare_video", "summary_line", "write_csv", "CSV_COLUMNS", "main"]

CSV_COLUMNS = ("video_id", "status", "official_subset", "our_subset", "official_frames", "our_frames",
               "frames_compared", "box_iou", "nme", "nmf")


def _ids(root: Path) -> dict[str, str]:
    return {v: s for s in SUBSETS for v in split_ids(root, s)}


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
             * np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None))
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def compare_video(ours: VideoLabels, theirs: VideoLabels) -> dict[str, Any]:
    """One video's row (without the subsets): frame counts, box IoU, NME and NMF of ours against theirs on the
    frames both have (the first ``min(F)`` frames where the counts differ)."""
    n = min(ours.n_frames, theirs.n_frames)
    row: dict[str, Any] = {"video_id": ours.video_id, "official_frames": theirs.n_frames, "our_frames": ours.n_frames,
                           "status": "ok" if ours.n_frames == theirs.n_frames else "frame_count_differs"}
    boxes = np.asarray(ours.boxes[:n], np.float64), np.asarray(theirs.boxes[:n], np.float64)
    known = np.isfinite(boxes[0]).all(axis=1) & np.isfinite(boxes[1]).all(axis=1)
    iou = _box_iou(boxes[0][known], boxes[1][known])
    row["box_iou"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else None
    mine, official = ours.landmarks[:n].astype(np.float64), theirs.landmarks[:n].astype(np.float64)
    usable = ours.valid[:n] & np.isfinite(official).all(axis=(1, 2))
    row["frames_compared"] = int(usable.sum())
    row["nme"] = float(100 * nme(mine[usable], official[usable]).mean()) if usable.any() else None
    start, stop = longest_valid_run(usable)
    row["nmf"] = nmf(mine[start:stop], official[start:stop]) if stop - start >= 2 else None
    return row


def compare_folders(official: str | Path, ours: str | Path) -> list[dict[str, Any]]:
    """A row per video of either side (see the module docstring), official list order first, then ours only.

    Every listed official video is read before anything is compared, so a folder with missing files is one
    :class:`~ldeq.layout.LayoutError` naming the first missing file.
    """
    official, ours = Path(official), Path(ours)
    theirs_ids, our_ids = _ids(official), _ids(ours)
    theirs = {v: load_video(official, v) for v in theirs_ids}  # every file of the official side checked first
    rows = []
    for vid, subset in theirs_ids.items():
        if vid not in our_ids:
            rows.append({"video_id": vid, "status": "missing_ours", "official_subset": subset,
                         "official_frames": theirs[vid].n_frames})
            continue
        rows.append({**compare_video(load_video(ours, vid), theirs[vid]), "official_subset": subset,
                     "our_subset": our_ids[vid]})
    for vid, subset in our_ids.items():
        if vid not in theirs_ids:
            rows.append({"video_id": vid, "status": "missing_official", "our_subset": subset,
                         "our_frames": load_video(ours, vid).n_frames})
    return rows


def _mean(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return f"{np.mean(values):.3f}" if values else "—"


def summary_line(rows: list[dict[str, Any]]) -> str:
    """One line: common, missing and mismatched videos, subset agreement, mean IoU, NME and NMF."""
    both = [r for r in rows if r["status"] in ("ok", "frame_count_differs")]
    same_subset = sum(1 for r in both if r["official_subset"] == r["our_subset"])
    count = {s: sum(1 for r in rows if r["status"] == s) for s in ("missing_ours", "missing_official",
                                                                    "frame_count_differs")}
    return (f"verify: {len(both)} videos on both sides ({same_subset} in the same subset), "
            f"{count['missing_ours']} official videos missing from ours, {count['missing_official']} of ours not in "
            f"the official lists, {count['frame_count_differs']} with another frame count; mean box IoU "
            f"{_mean(both, 'box_iou')}, NME {_mean(both, 'nme')} % (ours vs theirs, inter-ocular), NMF "
            f"{_mean(both, 'nmf')}")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_cell(r.get(c)) for c in CSV_COLUMNS] for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=Path, help="the official WFLW-V folder (bboxes/, landmarks/, the ID lists)")
    parser.add_argument("--ours", type=Path, default=Path("data/wflw_v"), help="our export (default: %(default)s)")
    parser.add_argument("--csv", type=Path, default=Path("verify.csv"), help="per-video table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        for folder, what in ((args.official, "official WFLW-V folder"), (args.ours, "export")):
            if not folder.is_dir():
                raise LayoutError(f"{folder}: {what} not found")
        rows = compare_folders(args.official, args.ours)
        write_csv(rows, args.csv)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or args.csv}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(summary_line(rows))
    print(f"per video: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
