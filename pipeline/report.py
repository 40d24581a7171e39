"""A one-page HTML report of a run: what failed where, the subsets, label quality and the LDEQ results."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["label_quality", "build_report"]


def label_quality(annotations: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per demo difficulty level: NME (%, inter-ocular) of the consensus labels against the demo's known-warp truth."""
    merged = annotations.merge(truth[truth.has_truth], on=["video_id", "frame"], suffixes=("", "_gt"))
    if merged.empty:
        return pd.DataFrame(columns=["difficulty", "frames", "label_nme"])
    pred = np.stack([np.stack(p) for p in merged.landmarks])
    gt = np.stack([np.stack(p) for p in merged.landmarks_gt])
    iod = np.linalg.norm(gt[:, 60] - gt[:, 72], axis=-1)
    merged["label_nme"] = 100 * np.linalg.norm(pred - gt, axis=-1).mean(-1) / iod
    return (merged.groupby("difficulty").agg(frames=("frame", "size"), label_nme=("label_nme", "mean"))
            .reset_index())


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, classes="t")


def build_report(manifests: Path, metrics: Path, demo_truth: Path | None) -> tuple[str, dict[str, Any]]:
    """Return the HTML page and the summary figures it shows."""
    statuses = []
    for stage, name in (("download", "downloads"), ("trim", "clips"), ("faces", "faces_status"),
                        ("label", "label_status"), ("score", "scores")):
        df = pd.read_parquet(manifests / f"{name}.parquet", columns=["video_id", "status"])
        statuses.append(df.assign(stage=stage))
    status = pd.concat(statuses).pivot_table(index="stage", columns="status", values="video_id", aggfunc="count",
                                             fill_value=0, sort=False).reset_index()
    scores = pd.read_parquet(manifests / "scores.parquet")
    ann = pd.read_parquet(manifests / "annotations.parquet")
    subsets = (ann.groupby("subset").agg(videos=("video_id", "nunique"), frames=("frame", "size"),
                                         disagreement=("disagreement", "mean")).reset_index())
    summary: dict[str, Any] = {"status": status.to_dict("records"), "subsets": subsets.to_dict("records")}
    parts = ["<h2>Videos per stage and status</h2>", _table(status), "<h2>Subsets</h2>", _table(subsets)]
    if demo_truth is not None and demo_truth.is_file():
        truth = pd.read_parquet(demo_truth)
        levels = truth.groupby("video_id").difficulty.first().rename("difficulty").reset_index()
        by_level = (scores.merge(levels, on="video_id").groupby("difficulty")
                    .agg(videos=("video_id", "size"), uncertainty=("uncertainty", "mean"),
                         hard=("subset", lambda s: int((s == "hard").sum()))).reset_index())
        quality = label_quality(ann, truth)
        summary.update(uncertainty_by_level=by_level.to_dict("records"), label_quality=quality.to_dict("records"))
        parts += ["<h2>Demo: uncertainty and hard-subset share by difficulty level</h2>", _table(by_level),
                  "<h2>Demo: pseudo-label NME (%) against the known-warp truth</h2>", _table(quality)]
    evaluation = json.loads((metrics / "evaluate.json").read_text())
    rows = [{"subset": s, "method": m, **v} for s, methods in evaluation["subsets"].items() for m, v in methods.items()]
    parts += ["<h2>LDEQ on video (NME %, NMF)</h2>", _table(pd.DataFrame(rows)),
              "<h2>Filter constants (tuned on easy)</h2>",
              f"<pre>{html.escape(json.dumps(evaluation['filters']))}</pre>",
              "<h2>RwR cost</h2>", f"<pre>{html.escape(json.dumps(evaluation['rwr_cost'], indent=1))}</pre>"]
    summary["ldeq"] = rows
    page = ("<!doctype html><meta charset=utf-8><title>WFLW-V pipeline report</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}.t td,.t th{padding:2px 8px}</style>"
            "<h1>WFLW-V pipeline report</h1>" + "".join(parts))
    return page, summary
