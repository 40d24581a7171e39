"""Self-checks that need no ground truth, per model on the demo clips: mirror and box-jitter disagreement, their cost,
what test-time augmentation (TTA) does to cross-family agreement, and a stability check from exact geometry.

For every model of ``label.models``, on every ``--step``-th frame with a valid face box (the faces stage's boxes,
``manifests/faces.parquet``), through the label stage's own code (:func:`pipeline.landmarks.label.checked_label`):

* ``mirror``: the model on the mirrored crop, mapped back with WFLW-98's left/right permutation, against the plain
  pass (mean point distance, inter-ocular units); ``jitter``: the passes from ``label.jitter_boxes``;
* ``before`` / ``after``: the crop conventions as fitted on the demo (horizontal offsets dx as measured) and as the
  label stage uses them now (fits pooled with their mirror images: dx = 0);
* per TTA mode (``none``, ``mirror``, ``mirror_jitter``): each model against the robust consensus of the *other*
  families (leave-one-family-out: each family judged by the others), and the per-model mode chosen by it with a
  leave-one-video-out figure (the mode chosen on the other videos, measured on the left-out one);
* ``exact_stability``: every camera-scenario demo clip is one still under a known warp, so the truth's per-frame
  warp (an affine fit of the frame's geometric truth onto frame 0's — any point set gives the same warp) maps each
  label back into frame 0; the spread there (mean distance to the clip's mean, inter-ocular units of frame 0) is
  label noise that the motion does not explain. It uses the warp only, never the reference points as a target;
* ``model_reference``: agreement with the demo's landmark *model reference* (dlib + MediaPipe mesh on the clean
  stills, carried through the warp): model output, reported for comparison only, never used to choose anything.

    python benchmarks/self_checks.py --step 3 --out benchmarks/results/self_checks.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import av
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from ldeq.wflw import interocular
from pipeline.landmarks.adapters import BoxMap, CropConvention
from pipeline.landmarks.consensus import family_points, load_consensus_model, robust_consensus
from pipeline.landmarks.label import SelfChecks, _canvas, checked_label, create_model, tta_points
from pipeline.landmarks.schemes import scheme_map
from pipeline.manifest import boxes_array, read_table, rows_by_video, write_json
from pipeline.params import PROJECT_PARAMS, stage_params

MODES = ("none", "mirror", "mirror_jitter")
#: (from_track, from_points, label crop) as conventions.json held them at 93aafc0: fitted on one side of the demo's
#: faces, constant horizontal offsets included
BEFORE = {"dlib_68": ((-0.0849, 0.0477, 1.0742, 0.8312), (-0.1125, -0.1395, 1.0816, 1.1368), "refined"),
          "faceapi_68": ((-0.0849, 0.0477, 1.0742, 0.8312), (-0.0505, -0.1131, 1.0245, 1.1515), "measured"),
          "mediapipe_mesh_v2": ((0.0256, 0.0959, 1.0714, 0.8222), (0.0, 0.0, 1.0, 1.0), "refined"),
          "peppa_slim_160": ((0.0193, 0.1467, 1.0101, 0.7243), (0.0, 0.0, 1.0, 1.0), "measured")}


def measured_conventions() -> dict[str, CropConvention]:
    """The conventions of the label stage before (:data:`BEFORE`)."""
    return {name: CropConvention(BoxMap(*track), BoxMap(*points), crop)  # type: ignore[arg-type]
            for name, (track, points, crop) in BEFORE.items()}


def collect(step: int, models: list[str], checks: SelfChecks) -> dict[str, Any]:
    """Run every model with its self-checks on the demo clips; per video the passes' points and timings."""
    faces = rows_by_video(read_table("manifests/faces.parquet", "faces"))
    clips = read_table("manifests/clips.parquet", "clips").to_pandas().set_index("video_id")
    before = measured_conventions()
    variants: dict[str, dict[str, Any]] = {"after": {}, "before": {}}
    for name in models:
        variants["after"][name] = create_model(name)
        if name in before:
            model = create_model(name)
            model.convention, model.crop = before[name], before[name].label_crop
            variants["before"][name] = model
    maps = {name: scheme_map(m.scheme) for name, m in variants["after"].items()}
    seconds: dict[str, dict[str, list[float]]] = {v: {m: [] for m in ms} for v, ms in variants.items()}
    videos = {}
    for vid, t in sorted(faces.items()):
        if vid not in clips.index or clips.loc[vid, "status"] != "ok":
            continue
        boxes = boxes_array(t)
        valid = np.asarray(t.column("valid").to_numpy(zero_copy_only=False), bool)
        rolls = np.asarray(t.column("roll").to_numpy(zero_copy_only=False), np.float64)
        chosen = np.flatnonzero(valid)[::step]
        out: dict[str, Any] = {"frames": chosen, "passes": {v: {m: {} for m in ms} for v, ms in variants.items()}}
        with av.open(str(clips.loc[vid, "path"])) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index not in set(chosen.tolist()):
                    continue
                roll = rolls[index] if np.isfinite(rolls[index]) else 0.0
                canvas, local, to_frame = _canvas(frame, boxes[index], roll)
                for variant, ms in variants.items():
                    for name, model in ms.items():
                        started = time.perf_counter()
                        label = checked_label(model, maps[name], canvas, local, to_frame, checks)
                        seconds[variant][name].append(time.perf_counter() - started)
                        if label is not None:
                            out["passes"][variant][name][index] = (label.passes, label.mirror, label.jitter)
        videos[vid] = out
        print(f"{vid}: {len(chosen)} frames", flush=True)
    families = {name: m.family for name, m in variants["after"].items()}
    n_passes = 1 + checks.mirror + len(checks.jitter_boxes)
    ms_per_pass = {v: {m: round(1000 * float(np.mean(s)) / n_passes, 2) for m, s in ms.items() if s}
                   for v, ms in seconds.items()}
    return {"videos": videos, "families": families, "maps": maps, "ms_per_pass": ms_per_pass, "n_passes": n_passes}


def arrays(video: dict[str, Any], variant: str, mode: str, models: list[str], maps: dict[str, Any]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (F, M, 98, 2) of TTA ``mode`` (NaN where undefined), mirror and jitter (F, M)."""
    frames = video["frames"]
    pts = np.full((len(frames), len(models), 98, 2), np.nan)
    mirror = np.full((len(frames), len(models)), np.nan)
    jitter = np.full_like(mirror, np.nan)
    for k, name in enumerate(models):
        got = video["passes"][variant].get(name) or video["passes"]["after"].get(name, {})
        for i, f in enumerate(frames.tolist()):
            if f not in got:
                continue
            passes, mirror[i, k], jitter[i, k] = got[f]
            mask = maps[name].mask
            p = tta_points(passes, mode, mask).astype(np.float64)
            p[~mask] = np.nan
            pts[i, k] = p
    return pts, mirror, jitter


def leave_one_family_out(fam_pts: np.ndarray, fams: list[str]) -> np.ndarray:
    """(F, K) each family's mean point distance to the robust consensus of the other families (inter-ocular)."""
    model = load_consensus_model(use_offsets=False)
    out = np.full(fam_pts.shape[:2], np.nan)
    for k in range(len(fams)):
        others = [i for i in range(len(fams)) if i != k]
        ref = robust_consensus(fam_pts[:, others], [fams[i] for i in others], model).points.astype(np.float64)
        d = np.linalg.norm(fam_pts[:, k] - ref, axis=-1)
        iod = interocular(ref)
        with np.errstate(invalid="ignore"):
            out[:, k] = np.nanmean(d, axis=-1) / iod
    return out


def exact_stability(points: np.ndarray, truth_box_pts: np.ndarray) -> float:
    """Mean distance (inter-ocular units of frame 0) of labels mapped into frame 0 by the true warp from their mean."""
    ok = np.isfinite(points).all(axis=(1, 2)) & np.isfinite(truth_box_pts).all(axis=(1, 2))
    if ok.sum() < 3:
        return float("nan")
    ref = truth_box_pts[np.flatnonzero(ok)[0]]
    mapped = []
    for p, g in zip(points[ok], truth_box_pts[ok]):
        design = np.c_[g, np.ones(len(g))]
        affine, *_ = np.linalg.lstsq(design, ref, rcond=None)  # exact: the frames are one still under a warp
        mapped.append(np.c_[p, np.ones(len(p))] @ affine)
    mapped_arr = np.asarray(mapped)
    spread = np.linalg.norm(mapped_arr - mapped_arr.mean(axis=0), axis=-1).mean(axis=-1)
    return float(spread.mean() / interocular(ref[None])[0])


def nme_reference(points: np.ndarray, reference: np.ndarray) -> float:
    iod = interocular(reference)
    d = np.linalg.norm(points - reference, axis=-1)
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(np.nanmean(d, axis=-1) / iod) * 100)


def summarise(data: dict[str, Any], models: list[str], threshold: float) -> dict[str, Any]:
    truth = pd.read_parquet("data/demo/truth.parquet")
    levels = truth.groupby("video_id").difficulty.first().to_dict()
    scenario = truth.groupby("video_id").scenario.first().to_dict()
    families, maps = data["families"], data["maps"]
    out: dict[str, Any] = {"ms_per_pass": data["ms_per_pass"], "passes_per_model": data["n_passes"],
                           "threshold": threshold}
    per_video: dict[str, Any] = {}
    for vid, video in data["videos"].items():
        entry: dict[str, Any] = {"level": int(levels.get(vid, -1)) if vid in levels else None,
                                 "scenario": scenario.get(vid, "carphone")}
        t = truth[(truth.video_id == vid) & truth.has_truth].set_index("frame")
        frames = video["frames"]
        geo = np.full((len(frames), 98, 2), np.nan)
        for i, f in enumerate(frames.tolist()):
            if f in t.index and t.loc[f, "reference_landmarks"] is not None:
                geo[i] = np.stack(t.loc[f, "reference_landmarks"])
        for variant in ("before", "after"):
            for mode in MODES:
                pts, mirror, jitter = arrays(video, variant, mode, models, maps)
                fam_pts, fams = family_points(pts, [families[m] for m in models])
                lofo = leave_one_family_out(fam_pts, fams)
                keep = ~(np.nan_to_num(np.fmax(mirror, jitter), nan=0.0) > threshold)
                gated = np.where(keep[..., None, None], pts, np.nan)
                gfam, _ = family_points(gated, [families[m] for m in models])
                cons = robust_consensus(gfam, fams, load_consensus_model(use_offsets=False)).points.astype(float)
                plain = robust_consensus(fam_pts, fams, load_consensus_model(use_offsets=False)).points.astype(float)
                key = f"{variant}/{mode}"
                entry[key] = {
                    "mirror": {m: float(np.nanmean(mirror[:, k])) for k, m in enumerate(models)},
                    "jitter": {m: float(np.nanmean(jitter[:, k])) for k, m in enumerate(models)},
                    "lofo": {f: float(np.nanmean(lofo[:, k])) for k, f in enumerate(fams)},
                    "excluded_share": float((~keep & np.isfinite(pts).all(-1).any(-1)).mean()),
                    "self_vs_lofo_spearman": _self_vs_lofo(mirror, jitter, lofo, models, families, fams),
                }
                if scenario.get(vid) == "camera":
                    entry[key]["exact_stability"] = {
                        "consensus": exact_stability(cons, geo), "consensus_ungated": exact_stability(plain, geo),
                        **{m: exact_stability(pts[:, k], geo) for k, m in enumerate(models)
                           if maps[m].mask[60] and maps[m].mask[72]}}
                if np.isfinite(geo).any():
                    entry[key]["model_reference_nme"] = {
                        "consensus": nme_reference(cons, geo),
                        **{m: nme_reference(pts[:, k], geo) for k, m in enumerate(models)}}
        per_video[vid] = entry
    out["videos"] = per_video
    out["summary"] = _tables(per_video, models, families)
    return out


def _self_vs_lofo(mirror: np.ndarray, jitter: np.ndarray, lofo: np.ndarray, models: list[str],
                  families: dict[str, str], fams: list[str]) -> dict[str, float]:
    """Per model, Spearman between its frame self-disagreement and its family's leave-one-family-out distance."""
    out = {}
    for k, m in enumerate(models):
        s = np.fmax(mirror[:, k], jitter[:, k])
        d = lofo[:, fams.index(families[m])]
        ok = np.isfinite(s) & np.isfinite(d)
        if ok.sum() >= 5:
            out[m] = float(spearmanr(s[ok], d[ok]).statistic)
    return out


def _tables(per_video: dict[str, Any], models: list[str], families: dict[str, str]) -> dict[str, Any]:
    def mean(key: str, field: str, name: str, vids: list[str]) -> float:
        vals = [per_video[v][key][field].get(name, np.nan) for v in vids if field in per_video[v][key]]
        vals = [x for x in vals if np.isfinite(x)]
        return round(float(np.mean(vals)), 4) if vals else float("nan")

    vids = sorted(per_video)
    by_level = {lv: [v for v in vids if per_video[v]["level"] == lv] for lv in range(4)}
    table: dict[str, Any] = {}
    for variant in ("before", "after"):
        for mode in MODES:
            key = f"{variant}/{mode}"
            table[key] = {
                "mirror": {m: mean(key, "mirror", m, vids) for m in models},
                "mirror_by_level": {m: [mean(key, "mirror", m, by_level[lv]) for lv in range(4)] for m in models},
                "jitter": {m: mean(key, "jitter", m, vids) for m in models},
                "lofo": {f: mean(key, "lofo", f, vids) for f in dict.fromkeys(families.values())},
                "exact_stability": {n: mean(key, "exact_stability", n, vids)
                                    for n in ["consensus", "consensus_ungated", *models]},
                "model_reference_nme_by_level": {n: [mean(key, "model_reference_nme", n, by_level[lv])
                                                     for lv in range(4)] for n in ["consensus", *models]},
                "excluded_share": round(float(np.mean([per_video[v][key]["excluded_share"] for v in vids])), 4),
            }
    # per model, the TTA mode with the lowest leave-one-family-out distance; leave-one-video-out: chosen without v
    choice, lovo = {}, {}
    for m in models:
        fam = families[m]
        score = {mode: mean(f"after/{mode}", "lofo", fam, vids) for mode in MODES}
        choice[m] = min(score, key=lambda k: score[k])
        held = []
        for v in vids:
            rest = [u for u in vids if u != v]
            pick = min(MODES, key=lambda mode: mean(f"after/{mode}", "lofo", fam, rest))
            held.append(per_video[v][f"after/{pick}"]["lofo"].get(fam, np.nan))
        lovo[m] = {"chosen": choice[m], "in_sample": score[choice[m]],
                   "leave_one_video_out": round(float(np.nanmean(held)), 4), "by_mode": score}
    table["tta_choice"] = lovo
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=3, help="every n-th valid frame of each clip")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as on the label stage's workers: one thread per model call
    label = stage_params("label", PROJECT_PARAMS)
    score = stage_params("score", PROJECT_PARAMS)
    models = list(label.models)
    checks = SelfChecks(True, label.jitter_boxes, {"default": "none"})
    data = collect(args.step, models, checks)
    result = summarise(data, models, score.max_self_disagreement)
    write_json(args.out, result)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
