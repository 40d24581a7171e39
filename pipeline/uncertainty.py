"""Uncertainty of pseudo-labels: per-frame consensus and disagreement, per-video scores, hard/easy selection."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.landmarks.consensus import consensus, disagreement
from pipeline.manifest import points_array

__all__ = ["FrameConsensus", "frame_consensus", "video_score", "select_subsets"]


@dataclass(frozen=True)
class FrameConsensus:
    """Consensus labels of one video: per frame points (F, 98, 2), family votes (F, 98), disagreement (F,)."""

    frames: np.ndarray
    points: np.ndarray
    votes: np.ndarray
    disagreement: np.ndarray
    n_models: int


def frame_consensus(rows: pa.Table) -> FrameConsensus:
    """Compute the consensus of one video's ``landmarks`` rows (any number of models per frame)."""
    frames = np.asarray(rows.column("frame").to_numpy())
    wflw = points_array(rows.column("wflw98"))
    masks = np.array(rows.column("mask").to_pylist(), bool).reshape(len(rows), -1)
    families = rows.column("family").to_pylist()
    order = np.unique(frames)
    points, votes, spread = [], [], []
    for f in order:
        sel = np.flatnonzero(frames == f)
        fam = [families[i] for i in sel]
        centre, vote = consensus(wflw[sel], masks[sel], fam)
        points.append(centre)
        votes.append(vote)
        spread.append(disagreement(wflw[sel], masks[sel], centre, vote))
    n_models = len(set(rows.column("model").to_pylist()))
    return FrameConsensus(order, np.stack(points), np.stack(votes), np.array(spread, np.float64), n_models)


def video_score(video_id: str, fc: FrameConsensus, min_models: int) -> dict[str, Any]:
    """A ``scores`` row (without rank/subset): mean per-frame disagreement when enough models voted."""
    valid = fc.disagreement[np.isfinite(fc.disagreement)]
    if fc.n_models < min_models or valid.size == 0:
        return {"video_id": video_id, "status": "model_error", "n_frames": len(fc.frames), "n_models": fc.n_models,
                "error": f"{fc.n_models} model(s) labelled this video; scoring needs >= {min_models}"}
    return {"video_id": video_id, "status": "ok", "error": None, "uncertainty": float(valid.mean()),
            "n_frames": len(fc.frames), "n_models": fc.n_models}


def select_subsets(rows: list[dict[str, Any]], n_hard: int) -> list[dict[str, Any]]:
    """Rank scored videos by uncertainty (1 = most uncertain); the top ``n_hard`` are ``hard``, the rest ``easy``.

    Ties break by video_id so the split is deterministic. Unscored videos get subset ``None``.
    """
    scored = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-r["uncertainty"], r["video_id"]))
    if n_hard > len(scored):
        n_hard = math.ceil(len(scored) / 2)
    for rank, row in enumerate(scored, start=1):
        row["rank"] = rank
        row["subset"] = "hard" if rank <= n_hard else "easy"
    return rows
