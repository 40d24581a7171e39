"""Evaluate anyone's landmark predictions on a WFLW-V folder: NME, FR, AUC, NMF and the stability curve NAD(τ).

``python -m ldeq.evaluate --predictions DIR --annotations data/wflw_v`` reads one ``<id>.npy`` per video from
``DIR`` (or ``DIR/landmarks/``), each (F, 98, 2) pixels for every frame of the clip (the layout of the annotations'
own ``landmarks/``), and prints and writes, per subset (``hard_video_IDs.txt``, ``easy_video_IDs.txt``):

* ``nme_io``: video NME, % of the inter-ocular distance (outer eye corners 60, 72), mean over videos;
* ``nme_face``: the same normalised by the face size, √(w · h) of the true shape's bounding box;
* ``fr10``, ``auc10``: failure rate and CED area up to 10 % inter-ocular NME over every evaluated frame;
* ``nmf``: normalised mean flicker (LDEQ's ``video_NMJ``), mean over videos;
* ``nad``: NAD(τ) for τ = 1, 2, 4, … frames (:func:`ldeq.metrics.nad`), mean over the videos long enough for it.

Each video is evaluated on its longest run of consecutive valid frames (``valid/`` of the pipeline's export; on the
official release every frame with finite points): video metrics compare consecutive frames, and the pipeline's
evaluate stage scores its own model on the same frames, so the two tables compare. The metric functions are
:mod:`ldeq.metrics`' (:func:`score_videos` and :func:`subset_summary` serve both). A predictions folder with a
missing video, a wrong shape or a NaN on an evaluated frame is one ``error:`` line naming the file, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldeq.layout import SUBSETS, LayoutError, load_points, load_video, split_ids
from ldeq.metrics import fr_auc, nad, nme, nme_face_size, nmf

__all__ = ["TAUS", "FAILURE_THRESHOLD", "VideoResult", "longest_valid_run", "score_video", "subset_summary",
           "video_row", "evaluate_folder", "format_table", "main"]

#: FR and AUC threshold, as a fraction of the inter-ocular distance (WFLW's 10 %).
FAILURE_THRESHOLD = 0.1
#: NAD averaging lengths (frames): powers of two, the spacing whose Allan variances are closest to independent. A
#: video contributes to τ where its evaluated run has at least 2τ frames.
TAUS = tuple(2**k for k in range(11))


@dataclass(frozen=True)
class VideoResult:
    """One video's scores on its evaluated frames ``[start, start + frames)``."""

    video_id: str
    subset: str
    start: int
    frames: int
    nme_io: float  # % inter-ocular, mean over the frames
    nme_face: float  # % face size
    nmf: float  # NaN with fewer than two frames
    frame_nme_io: tuple[float, ...]  # per frame, a fraction (FR/AUC pool these)
    nad: tuple[float, ...]  # at TAUS (or the taus asked for), NaN where the run is shorter than 2τ


def longest_valid_run(valid: np.ndarray) -> tuple[int, int]:
    """``[start, stop)`` of the longest run of True in ``valid`` (the first of equal runs); (0, 0) if none."""
    best, start = (0, 0), None
    for i, ok in enumerate([*np.asarray(valid, bool).tolist(), False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def score_video(video_id: str, subset: str, pred: np.ndarray, gt: np.ndarray, start: int = 0,
                taus: Sequence[int] | None = None) -> VideoResult:
    """Score one video's predictions (F, 98, 2) against its labels on the same frames."""
    per_frame = nme(pred, gt)
    flicker = nmf(pred, gt) if len(gt) >= 2 else math.nan
    curve = nad(pred, gt, list(TAUS if taus is None else taus))
    return VideoResult(video_id, subset, start, len(gt), float(100 * per_frame.mean()),
                       float(100 * nme_face_size(pred, gt).mean()), flicker, tuple(float(x) for x in per_frame),
                       tuple(float(x) for x in curve))


def subset_summary(results: Sequence[VideoResult], taus: Sequence[int]) -> dict[str, Any]:
    """The table row of one subset: means over videos, FR/AUC over every frame, NAD(τ) per τ of ``taus``."""
    if not results:
        return {"videos": 0, "frames": 0}
    frames = np.concatenate([r.frame_nme_io for r in results])
    fr, auc = fr_auc(frames, FAILURE_THRESHOLD)
    flickers = [r.nmf for r in results if np.isfinite(r.nmf)]
    curve = []
    for k, tau in enumerate(taus):
        values = [r.nad[k] for r in results if k < len(r.nad) and np.isfinite(r.nad[k])]
        if values:
            curve.append({"tau": int(tau), "nad": float(np.mean(values)), "videos": len(values)})
    return {"videos": len(results), "frames": int(len(frames)),
            "nme_io": float(np.mean([r.nme_io for r in results])),
            "nme_face": float(np.mean([r.nme_face for r in results])),
            "fr10": fr, "auc10": auc, "nmf": float(np.mean(flickers)) if flickers else None, "nad": curve}


def _prediction_path(predictions: Path, video_id: str) -> Path:
    nested = predictions / "landmarks"
    return (nested if nested.is_dir() else predictions) / f"{video_id}.npy"


def evaluate_folder(predictions: str | Path, annotations: str | Path,
                    subsets: Sequence[str] = SUBSETS) -> dict[str, Any]:
    """Score every listed video of ``subsets``; raise :class:`~ldeq.layout.LayoutError` (one line) on bad input.

    Returns ``{"annotations", "predictions", "subsets": {subset: summary}, "videos": [per-video rows]}``.
    """
    predictions, annotations = Path(predictions), Path(annotations)
    if not predictions.is_dir():
        raise LayoutError(f"{predictions}: predictions folder not found")
    wanted = {s: split_ids(annotations, s) for s in subsets}
    missing = [v for ids in wanted.values() for v in ids if not _prediction_path(predictions, v).is_file()]
    if missing:
        listed = sum(len(ids) for ids in wanted.values())
        raise LayoutError(f"{predictions}: no prediction for {len(missing)} of the {listed} listed videos "
                          f"({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}): expected <id>.npy")
    results: list[VideoResult] = []
    for subset, ids in wanted.items():
        for video_id in ids:
            labels = load_video(annotations, video_id)
            path = _prediction_path(predictions, video_id)
            pred = load_points(path, labels.n_frames)
            start, stop = longest_valid_run(labels.valid)
            if stop - start < 1:
                continue  # nothing trusted to compare with: the video is not scored (counted below)
            window = pred[start:stop]
            bad = np.flatnonzero(~np.isfinite(window).all(axis=(1, 2)))
            if bad.size:
                raise LayoutError(f"{path}: frame {start + int(bad[0])} is not 98 finite points, but it is a valid "
                                  f"frame of {annotations / 'landmarks' / (video_id + '.npy')}")
            results.append(score_video(video_id, subset, window, labels.landmarks[start:stop].astype(np.float64),
                                       start))
    summary = {s: subset_summary([r for r in results if r.subset == s], TAUS) for s in subsets}
    for s in subsets:
        summary[s]["unscored"] = len(wanted[s]) - summary[s]["videos"]
    return {"annotations": str(annotations), "predictions": str(predictions), "subsets": summary,
            "videos": [video_row(r) for r in results]}


def video_row(result: VideoResult) -> dict[str, Any]:
    """A plain-JSON row of one video: its scores, and its NAD curve where the run is long enough (no NaN)."""
    row = {k: v for k, v in asdict(result).items() if k not in ("frame_nme_io", "nad")}
    row["nmf"] = None if not math.isfinite(result.nmf) else result.nmf
    row["nad"] = {str(t): v for t, v in zip(TAUS, result.nad) if math.isfinite(v)}
    return row


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def format_table(results: dict[str, Any]) -> list[str]:
    """The printed table: one line per subset, then its NAD(τ) curve."""
    lines = [f"{'subset':<6} {'videos':>6} {'frames':>7} {'NME io %':>9} {'NME face %':>10} {'FR10 %':>7} "
             f"{'AUC10 %':>8} {'NMF':>8}"]
    for subset, s in results["subsets"].items():
        if not s["videos"]:
            lines.append(f"{subset:<6} {0:>6} {0:>7}   (no video scored)")
            continue
        lines.append(f"{subset:<6} {s['videos']:>6} {s['frames']:>7} {_fmt(s['nme_io']):>9} {_fmt(s['nme_face']):>10} "
                     f"{_fmt(s['fr10']):>7} {_fmt(s['auc10']):>8} {_fmt(s['nmf']):>8}")
    for subset, s in results["subsets"].items():
        if s.get("nad"):
            curve = "  ".join(f"τ={p['tau']}: {_fmt(p['nad'])}" for p in s["nad"])
            lines.append(f"NAD(τ) {subset}: {curve}")
    return lines


def _write_json(path: Path, payload: Any) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldeq.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path,
                        help="folder of <id>.npy predictions, (F, 98, 2) pixels, every frame of the clip")
    parser.add_argument("--annotations", required=True, type=Path, help="a WFLW-V folder, e.g. data/wflw_v")
    parser.add_argument("--subset", choices=[*SUBSETS, "all"], default="all", help="default: %(default)s")
    parser.add_argument("--out", type=Path, help="results JSON (default: <predictions>/evaluation.json)")
    args = parser.parse_args(argv)
    subsets = SUBSETS if args.subset == "all" else (args.subset,)
    try:
        results = evaluate_folder(args.predictions, args.annotations, subsets)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.predictions / "evaluation.json"
    try:
        _write_json(out, results)
    except OSError as err:
        print(f"error: {out}: cannot write the results: {err.strerror or err}", file=sys.stderr)
        return 2
    print("\n".join(format_table(results)))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
