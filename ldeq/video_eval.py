"""Video evaluation: per-video NME and NMF for several methods, and filter constants tuned on a validation split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ldeq.filters import ema, one_euro
from ldeq.metrics import nmf, video_nme

__all__ = ["FILTER_GRIDS", "apply_filter", "objective", "tune_filter", "VideoScores", "score_video", "summarize"]

#: Candidate constants searched on the validation split; each grid ends with (nearly) no smoothing, so tuning may
#: switch a filter off where it only adds lag.
FILTER_GRIDS: dict[str, list[dict[str, float]]] = {
    "ema": [{"alpha": a} for a in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)],
    "one_euro": [{"min_cutoff": c, "beta": b} for c in (0.3, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
                 for b in (0.0, 0.005, 0.02, 0.08)],
}


def apply_filter(kind: str, track: np.ndarray, fps: float, constants: Mapping[str, float]) -> np.ndarray:
    """Filter a (frames, L, 2) track with the named filter and constants."""
    if kind == "ema":
        return ema(track, constants["alpha"]).astype(np.float32)
    if kind == "one_euro":
        return one_euro(track, fps, constants["min_cutoff"], constants["beta"]).astype(np.float32)
    raise ValueError(f"unknown filter {kind!r}")


def objective(raw: list[np.ndarray], candidate: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """Mean over videos of ½·NME/NME_raw + ½·NMF/NMF_raw: lower is better, 1 = no change.

    Weighing error and flicker equally stops a smoother from buying stability with lag.
    """
    ratios = [0.5 * video_nme(c, g) / video_nme(r, g) + 0.5 * nmf(c, g) / nmf(r, g)
              for r, c, g in zip(raw, candidate, gts)]
    return float(np.mean(ratios))


def tune_filter(kind: str, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[dict[str, float], float]:
    """Pick the constants of ``kind`` minimising :func:`objective` on validation ``(pred, gt, fps)`` triples."""
    if not pairs:
        raise ValueError("filter tuning needs at least one validation video")
    raw, gts = [p for p, _, _ in pairs], [g for _, g, _ in pairs]
    scored = [(objective(raw, [apply_filter(kind, p, fps, c) for p, _, fps in pairs], gts), c)
              for c in FILTER_GRIDS[kind]]
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
