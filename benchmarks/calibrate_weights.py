"""Fit the consensus's per-family, per-region weights by leave-one-family-out agreement, with leave-one-video-out
figures; write them to ``pipeline/landmarks/weights.json`` (offsets and constants kept).

No ground truth and no model reference: on every labelled video of the run (``manifests/landmarks.parquet``, the
label stage's output with its self-checks and TTA; frames with a valid face box; models that fail their self-checks
left out, as the score stage leaves them out), each family is judged by the robust consensus of the *others*
(:func:`pipeline.landmarks.calibration.leave_one_out`); its weight per region is 1 / its mean squared scatter
around that reference, each video's mean offset removed (:func:`~pipeline.landmarks.calibration.fit_weights`).

Figure of merit, also without truth: the mean leave-one-family-out distance (inter-ocular units) — each family
against the weighted consensus of the others — per video. ``leave_one_video_out``: the weights fitted on the other
videos, measured on the left-out one; compared with equal weights and with the weights in use before.

    python benchmarks/calibrate_weights.py --out benchmarks/results/calibrate_weights.json [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np

from ldeq.wflw import interocular
from pipeline.landmarks.calibration import fit_weights, leave_one_out
from pipeline.landmarks.consensus import (
    WEIGHTS_FILE,
    ConsensusModel,
    family_points,
    load_consensus_model,
    robust_consensus,
)
from pipeline.manifest import iter_joined, write_json
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.uncertainty import model_points


def load_ungated() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Per video, family points (F, K, 98, 2) without the gate and each model-frame's self-disagreement folded to
    its family (F, K: the largest of the family's models)."""
    out, families = {}, None
    for vid, (landmarks, faces) in iter_joined(("manifests/landmarks.parquet", "landmarks"),
                                               ("manifests/faces.parquet", "faces")):
        if landmarks is None or faces is None or not len(landmarks):
            continue
        frames = np.asarray(faces.column("frame").to_numpy(), np.int64)
        valid = np.asarray(faces.column("valid").to_numpy(zero_copy_only=False), bool)
        mp = model_points(landmarks, frames[valid])
        fam_pts, names = family_points(mp.points, mp.families)
        if families is None:
            families = names
        pts = np.full((len(fam_pts), len(families), 98, 2), np.nan)
        self_dis = np.full((len(fam_pts), len(families)), np.nan)
        model_self = mp.self_disagreement()
        for k, f in enumerate(families):
            if f in names:
                pts[:, k] = fam_pts[:, names.index(f)]
                cols = [i for i, g in enumerate(mp.families) if g == f]
                with np.errstate(invalid="ignore"):
                    self_dis[:, k] = np.nanmax(np.where(np.isfinite(model_self[:, cols]), model_self[:, cols],
                                                        -np.inf), axis=1)
        out[vid] = (pts, np.where(np.isfinite(self_dis), self_dis, np.nan))
    assert families is not None, "no labelled video in manifests/landmarks.parquet"
    return out, families


def gate(points: np.ndarray, self_dis: np.ndarray, threshold: float) -> np.ndarray:
    """The family points with the frames where the family failed its self-checks (above ``threshold``) left out."""
    return np.where((np.nan_to_num(self_dis, nan=0.0) > threshold)[..., None, None], np.nan, points)


def load(max_self: float) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per video, family points (F, K, 98, 2) on frames with a valid box, self-check failures left out (as the
    score stage leaves them out); the K families in a fixed order."""
    videos, families = load_ungated()
    return {vid: gate(points, self_dis, max_self) for vid, (points, self_dis) in videos.items()}, families


def gated_lofo_distance(points: np.ndarray, self_dis: np.ndarray, families: list[str], threshold: float) -> float:
    """Each family, *ungated*, against the consensus of the others with their frames above ``threshold`` left out:
    a gate helps only if it brings the others' consensus closer to an independent family (judging the gated
    frames too, so leaving hard frames out earns nothing by itself)."""
    model = ConsensusModel()
    gated = gate(points, self_dis, threshold)
    out = []
    for k in range(len(families)):
        others = [i for i in range(len(families)) if i != k]
        ref = robust_consensus(gated[:, others], [families[i] for i in others], model).points.astype(np.float64)
        d = np.linalg.norm(points[:, k] - ref, axis=-1)
        with np.errstate(invalid="ignore"):
            out.append(np.nanmean(d, axis=-1) / interocular(ref))
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(np.stack(out)))


def threshold_study(thresholds: list[float]) -> dict[str, Any]:
    """Mean gated leave-one-family-out distance per ``score.max_self_disagreement`` candidate, and the threshold
    chosen on the other videos for each left-out one."""
    videos, families = load_ungated()
    table = {vid: {str(t): gated_lofo_distance(p, s, families, t) for t in thresholds}
             for vid, (p, s) in sorted(videos.items())}
    mean = {str(t): round(float(np.nanmean([table[v][str(t)] for v in table])), 5) for t in thresholds}
    held = []
    for vid in table:
        rest = [v for v in table if v != vid]
        pick = min(thresholds, key=lambda t: float(np.nanmean([table[v][str(t)] for v in rest])))
        held.append((pick, table[vid][str(pick)]))
    return {"mean": mean, "chosen_in_sample": min(mean, key=lambda k: mean[k]),
            "leave_one_video_out": round(float(np.mean([h[1] for h in held])), 5),
            "leave_one_video_out_choices": sorted({str(h[0]) for h in held}), "videos": table}


def lofo_distance(points: np.ndarray, families: list[str], model: ConsensusModel) -> float:
    """Mean over families and frames of each family's distance to the weighted consensus of the others."""
    ref = leave_one_out(points, families, model)  # (F, K, 98, 2)
    d = np.linalg.norm(points - ref, axis=-1)
    iod = np.stack([interocular(ref[:, k]) for k in range(len(families))], axis=1)
    with np.errstate(invalid="ignore"):
        per = np.nanmean(d, axis=-1) / iod
    return float(np.nanmean(per))


def fit(videos: dict[str, np.ndarray], families: list[str]) -> dict[str, tuple[float, ...]]:
    points = np.concatenate(list(videos.values()))
    groups = np.concatenate([[v] * len(p) for v, p in videos.items()])
    return fit_weights(points, families, leave_one_out(points, families, ConsensusModel()), groups)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--write", action="store_true", help="write the weights into pipeline/landmarks/weights.json")
    parser.add_argument("--thresholds", help="comma-separated score.max_self_disagreement candidates to compare "
                                             "(gated leave-one-family-out, leave-one-video-out); then exit")
    args = parser.parse_args()
    if args.thresholds:
        study = threshold_study([float(t) for t in args.thresholds.split(",")])
        write_json(args.out, study)
        print(json.dumps({k: v for k, v in study.items() if k != "videos"}, indent=1))
        return 0
    score = stage_params("score", PROJECT_PARAMS)
    videos, families = load(score.max_self_disagreement)
    before = load_consensus_model(use_offsets=False)
    weights = fit(videos, families)
    fitted = ConsensusModel(weights, {}, before.default_weight, before.point_scale, before.frame_scale, before.agree)
    equal = ConsensusModel({}, {}, 1.0, before.point_scale, before.frame_scale, before.agree)
    per_video: dict[str, Any] = {}
    for vid, pts in sorted(videos.items()):
        rest = {v: p for v, p in videos.items() if v != vid}
        held = fit(rest, families)
        lovo = ConsensusModel(held, {}, before.default_weight, before.point_scale, before.frame_scale, before.agree)
        per_video[vid] = {"equal": lofo_distance(pts, families, equal),
                          "before": lofo_distance(pts, families, before),
                          "fitted_in_sample": lofo_distance(pts, families, fitted),
                          "fitted_leave_one_video_out": lofo_distance(pts, families, lovo)}
        print(vid, {k: round(v, 4) for k, v in per_video[vid].items()}, flush=True)
    summary = {k: round(float(np.mean([v[k] for v in per_video.values()])), 4)
               for k in ("equal", "before", "fitted_in_sample", "fitted_leave_one_video_out")}
    result = {"families": families, "weights": {f: [round(w, 4) for w in ws] for f, ws in weights.items()},
              "mean_lofo_distance": summary, "videos": per_video, "n_videos": len(videos)}
    write_json(args.out, result)
    print(json.dumps(summary, indent=1))
    # equal weights are not fitted, so their figure is already a held-out one; fitted weights must beat it held out
    use_fitted = summary["fitted_leave_one_video_out"] < summary["equal"]
    result["chosen"] = "fitted" if use_fitted else "equal"
    write_json(args.out, result)
    print("chosen:", result["chosen"])
    if args.write:
        data = json.loads(WEIGHTS_FILE.read_text(encoding="utf-8"))
        data["weights"] = result["weights"] if use_fitted else {}
        data["default_weight"] = 1.0
        data["provenance"] = (
            "benchmarks/calibrate_weights.py --write: per-family, per-region weights = 1 / mean squared scatter of "
            "each family around the robust consensus of the other families (each video's mean offset removed), "
            f"fitted on the {len(videos)} labelled videos of the demo run (label stage with self-checks and TTA, "
            "frames with a valid box, models failing their self-checks left out), kept only if they lower the mean "
            "leave-one-family-out distance under leave-one-video-out; else equal weights (empty table). No ground "
            f"truth, no model reference. Mean leave-one-family-out distance: equal {summary['equal']}, previous "
            f"weights {summary['before']}, fitted {summary['fitted_in_sample']} in sample, "
            f"{summary['fitted_leave_one_video_out']} leave-one-video-out: {result['chosen']}. Offsets: as before "
            "(benchmarks/label_quality.py --fit; unused while score.offsets is false)")
        write_json(WEIGHTS_FILE, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
