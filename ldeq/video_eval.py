"""Video evaluation: per-video NME and NMF for several methods, and filter constants tuned on a validation split."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ldeq.filters import ema, one_euro
from ldeq.metrics import nmf, video_nme

__all__ = ["FILTER_GRIDS", "apply_filter", "tune_filter", "VideoScores", "score_video", "summarize"]

#: Candidate constants searched on the validation split.
FILTER_GRIDS: dict[str, list[dict[str, float]]] = {
    "ema": [{"alpha": a} for a in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)],
    "one_euro": [{"min_cutoff": c, "beta": b} for c in (0.3, 0.6, 1.0, 2.0, 4.0) for b in (0.0, 0.005, 0.02, 0.08)],
}


def apply_filter(kind: str, track: np.ndarray, fps: float, constants: Mapping[str, float]) -> np.ndarray:
    """Filter a (frames, L, 2) track with the named filter and constants."""
    if kind == "ema":
        return ema(track, constants["alpha"]).astype(np.float32)
    if kind == "one_euro":
        return one_euro(track, fps, constants["min_cutoff"], constants["beta"]).astype(np.float32)
    raise ValueError(f"unknown filter {kind!r}")


def _objective(pairs: list[tuple[np.ndarray, np.ndarray, float]], filt: Callable[[np.ndarray, float], np.ndarray]
               ) -> float:
    """Mean of NME/NME_raw and NMF/NMF_raw over the validation videos: a filter must not buy stability with error."""
    ratios = []
    for pred, gt, fps in pairs:
        smoothed = filt(pred, fps)
        ratios.append(0.5 * video_nme(smoothed, gt) / video_nme(pred, gt) + 0.5 * nmf(smoothed, gt) / nmf(pred, gt))
    return float(np.mean(ratios))


def tune_filter(kind: str, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[dict[str, float], float]:
    """Pick the constants of ``kind`` minimising the objective on validation ``(pred, gt, fps)`` triples."""
    if not pairs:
        raise ValueError("filter tuning needs at least one validation video")
    scored = [(_objective(pairs, lambda p, fps, c=c: apply_filter(kind, p, fps, c)), c) for c in FILTER_GRIDS[kind]]
    best_value, best = min(scored, key=lambda s: s[0])
    return dict(best), best_value


@dataclass(frozen=True)
class VideoScores:
    """One video's scores for one method."""

    video_id: str
    method: str
    nme: float
    nmf: float


def score_video(video_id: str, gt: np.ndarray, preds: Mapping[str, np.ndarray]) -> list[VideoScores]:
    """Video NME and NMF of every method's prediction against ``gt`` (frames, 98, 2)."""
    return [VideoScores(video_id, m, video_nme(p, gt), nmf(p, gt)) for m, p in preds.items()]


def summarize(scores: list[VideoScores]) -> dict[str, dict[str, float]]:
    """``{method: {"nme": mean over videos, "nmf": mean over videos, "n_videos": n}}``."""
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(s.method for s in scores):
        mine = [s for s in scores if s.method == method]
        out[method] = {"nme": float(np.mean([s.nme for s in mine])), "nmf": float(np.mean([s.nmf for s in mine])),
                       "n_videos": len(mine)}
    return out
