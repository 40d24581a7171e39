"""Pseudo-labels against the demo's model reference: every model, the consensus rules, validity, the video score,
flicker, speed.

The demo's landmark reference (``reference_landmarks`` of ``data/demo/truth.parquet``) is model output, not truth:
dlib ERT-68 + MediaPipe mesh on a dlib HOG box, measured once on each clean still (``pipeline/demo/reference.py``)
and carried through the known warp. Every figure here against it is a *distance to the model reference*: agreement
with two of the voters, never accuracy. The demo's boxes are exact (``--truth-boxes`` uses them). The only landmark
truth is people's corrections (``benchmarks/corrections_quality.py``).

Steps (each reads what the previous one cached under ``.cache/label_quality/``):

* ``--collect``: run every landmark model (``MODELS``) through the label stage's own code
  (:func:`pipeline.landmarks.label.label_video`) on every demo clip with the faces stage's boxes
  (``manifests/faces.parquet``), once per crop mode (``--modes``: ``given`` = the box as tracked, ``measured`` =
  mapped to each model's reference box, ``refined`` = plus the second pass, ``label`` = each model in the mode
  ``conventions.json`` gives the label stage): every model in the first mode run, one model per full family
  (``CROP_MODELS``) in the others, which reuse the face detectors' 5 points of the first (they find their own box);
  ``--truth-boxes`` adds a run on the truth boxes (isolates tracking);
* ``--fit``: measure the consensus model on the *fit half* of the demo (identities in sorted order, alternately:
  astronaut, t1face1, t1face3, t1face5) from the run ``--fit-on`` and write ``pipeline/landmarks/weights.json``:
  per-family offsets from the annotation-trained families (no reference used), per-family per-region weights
  against the other families' consensus (``--fit-reference agreement``, the default) or, circularly, against the
  model reference (``reference``: it rewards agreeing with dlib and the mesh; kept only to show that bias);
* always: the tables, for the fit half, the held-out half (t1face0, t1face2, t1face4) and all, each also as
  *agreement between independent families* (no reference: a model against the robust consensus of the other families;
  the consensus as the mean over the full families of its error when that family is left out and then used as
  the reference);
* ``--timing``: per-model ms per face and the label stage's per-frame time on demo frames (one thread), for the
  label configuration before this change and the pipeline's.

    python benchmarks/label_quality.py --collect --fit --timing --out benchmarks/results/label_quality.json

The model reference is the dlib-68 + MediaPipe-mesh family mean on clean stills: it favours those two models and
carries half of the mesh's jaw offset. Offsets are therefore measured without it, and every comparison is also given
as agreement between independent families.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.stats import spearmanr

from ldeq.wflw import interocular
from pipeline.landmarks.calibration import fit_offsets, fit_weights, leave_one_out
from pipeline.landmarks.consensus import (
    WEIGHTS_FILE,
    ConsensusModel,
    apply_offsets,
    family_points,
    load_consensus_model,
    robust_consensus,
)
from pipeline.landmarks.schemes import POINTS68, REGIONS
from pipeline.manifest import read_table, rows_by_video, write_json, write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.uncertainty import model_points, select_subsets, video_labels, video_score

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "label_quality"
FULL_MODELS = ["dlib_68", "mediapipe_mesh_v2", "mediapipe_mesh_v1", "faceapi_68", "faceapi_68_tiny", "peppa_slim_160"]
FIVE_MODELS = ["retinaface_5", "centerface_5", "yunet_5", "mtcnn_5"]
#: one model per full family: the only ones run again in the other crop modes (same-family twins add nothing there)
CROP_MODELS = ["dlib_68", "mediapipe_mesh_v2", "faceapi_68", "peppa_slim_160"]
MODELS = FULL_MODELS + FIVE_MODELS
FULL_FAMILIES = ["dlib_ert", "mediapipe_mesh", "faceapi_cnn", "peppa_cnn"]  # 68/468-point families (agreement refs)
ANCHORS = ["dlib_ert", "faceapi_cnn", "peppa_cnn"]  # families trained on human iBUG-68 annotations
TODAY = ["dlib_68", "mediapipe_mesh_v2"]  # labels v1: equal vote of these two
#: label configuration before issue #17 (labels v2): models and crop mode, for the timing comparison
BEFORE = (["dlib_68", "mediapipe_mesh_v2", "faceapi_68", "retinaface_5", "centerface_5", "mtcnn_5"], "given")


def split_of(media: str) -> str:
    """``fit`` or ``held_out``: demo identities in sorted order, alternately (carphone has no reference)."""
    ids = ["astronaut", "t1face0", "t1face1", "t1face2", "t1face3", "t1face4", "t1face5"]
    return "fit" if ids.index(media) % 2 == 0 else "held_out"


# --------------------------------------------------------------------------------------------------- collection


def collect(demo_rows: pd.DataFrame, modes: list[str], truth_boxes: bool, videos: list[str] | None) -> None:
    """Label the demo clips with every model: the faces stage's boxes once per crop mode (the 5-point models once,
    in the first mode), and the truth boxes (raw clips, crop ``given``) when asked."""
    from pipeline.landmarks.label import label_video

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    wanted = set(videos) if videos else None
    if truth_boxes:
        demo = stage_params("demo", PROJECT_PARAMS)
        n_raw = demo.lead_frames + demo.clip_frames + demo.tail_frames
        rows: list[dict[str, Any]] = []
        for vid, t in demo_rows.groupby("video_id"):
            ok = t[t.has_truth & t.visible.fillna(False)]
            if ok.empty or (wanted and vid not in wanted):
                continue
            boxes = np.full((n_raw, 4), np.nan)
            boxes[demo.lead_frames + ok.frame.to_numpy()] = ok[["x1", "y1", "x2", "y2"]].to_numpy()
            out = label_video(vid, ROOT / "data" / "demo" / "raw" / f"{vid}.mp4", boxes, MODELS, crop="given")
            print(vid, out["status"]["status"], len(out["rows"]), flush=True)
            for r in out["rows"]:
                r["frame"] -= demo.lead_frames  # raw frame → clip frame
            rows += out["rows"]
        write_rows(rows, "landmarks", CACHE / "truthbox.parquet")
    faces_path = ROOT / "manifests" / "faces.parquet"
    clips = {c["video_id"]: c["path"] for c in read_table(ROOT / "manifests" / "clips.parquet", "clips").to_pylist()}
    with_truth = set(demo_rows[demo_rows.has_truth].video_id)
    pa.parquet.write_table(read_table(faces_path, "faces"), CACHE / "faces.parquet")
    given = CACHE / "facebox_given.parquet"
    five = [r for r in read_table(given, "landmarks").to_pylist() if r["model"] in FIVE_MODELS] \
        if given.is_file() and "given" not in modes else []
    for mode in modes:
        rows = []
        names = CROP_MODELS if five else MODELS
        for vid, t in rows_by_video(read_table(faces_path, "faces")).items():
            if vid not in with_truth or (wanted and vid not in wanted):
                continue
            boxes = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("x1", "y1", "x2", "y2")], 1)
            started = time.monotonic()
            crop = None if mode == "label" else mode  # "label": each model in the mode conventions.json gives it
            out = label_video(vid, ROOT / clips[vid], boxes, names, t.column("valid").to_numpy(zero_copy_only=False),
                              t.column("roll").to_numpy(zero_copy_only=False), crop=crop)  # type: ignore[arg-type]
            print(vid, f"faces boxes, crop {mode}:", out["status"]["status"], len(out["rows"]),
                  f"{time.monotonic() - started:.1f} s", flush=True)
            rows += out["rows"]
        if five:
            rows += five
        else:
            five = [r for r in rows if r["model"] in FIVE_MODELS]
        write_rows(rows, "landmarks", CACHE / f"facebox_{mode}.parquet")


# ---------------------------------------------------------------------------------------------------- the data


def load_videos(cache: Path, demo_rows: pd.DataFrame, faces: Path | None = None) -> list[dict[str, Any]]:
    """Per still-based demo video: its landmark rows, the model reference (F, 98, 2) on the frames where the face is
    visible, level, scenario, split."""
    tables = rows_by_video(read_table(cache, "landmarks"))
    face_tables = rows_by_video(read_table(faces, "faces")) if faces else {}
    out = []
    for vid, t in demo_rows.groupby("video_id"):
        ok = t[t.has_truth & t.visible.fillna(False)]
        if ok.empty or vid not in tables:
            continue
        out.append({"video_id": vid, "rows": tables[vid], "faces": face_tables.get(vid),
                    "frames": ok.frame.to_numpy(), "reference": np.stack([np.stack(p) for p in ok.reference_landmarks]),
                    "level": int(ok.difficulty.iloc[0]), "scenario": ok.scenario.iloc[0],
                    "split": split_of(ok.media.iloc[0])})
    return out


def nme(pred: np.ndarray, ref: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """Per-frame normalised mean distance (%, outer-eye-corner distance of ``ref``) over ``points`` (default: where
    pred is finite). Against the model reference it is a distance to two voters' reading, not an error."""
    iod = interocular(ref)
    d = np.linalg.norm(pred - ref, axis=-1)
    if points is not None:
        d = d[:, points]
    return 100 * np.nanmean(d, axis=-1) / iod


def flicker(pred: np.ndarray, ref: np.ndarray, frames: np.ndarray, use: np.ndarray) -> float:
    """Mean frame-to-frame change of the label's offset from the reference (%, inter-ocular) over consecutive used
    frames: the reference moves exactly with the known warp, so this is the labels' jitter."""
    err = pred - ref
    iod = interocular(ref)
    pair = (np.diff(frames) == 1) & use[1:] & use[:-1]
    if not pair.any():
        return float("nan")
    step = np.linalg.norm(np.diff(err, axis=0), axis=-1).mean(axis=-1) / iod[1:]
    return float(100 * step[pair].mean())


# ---------------------------------------------------------------------------------------------------- fitting


def fit(videos: list[dict[str, Any]], source: str, reference: str) -> dict[str, Any]:
    """Offsets (reference-free) and weights (per-video mean error removed) on the fit half; the weights file.
    Weights are measured with each family against the robust consensus of the others (``agreement``) or, circularly,
    against the demo's model reference (``reference``)."""
    pts, refs, groups, families = [], [], [], None
    for v in videos:
        if v["split"] != "fit":
            continue
        _mp = model_points(v["rows"], v["frames"])
        fp, families_v = family_points(_mp.points, _mp.families)
        if families is None:
            families = families_v
        order = [families_v.index(f) for f in families]
        pts.append(fp[:, order])
        refs.append(v["reference"])
        groups += [v["video_id"]] * len(v["frames"])
    assert families is not None
    points = np.concatenate(pts)
    target = np.concatenate(refs)
    offsets = fit_offsets(points, families, ANCHORS)
    anchor_ref = np.nanmean(points[:, [families.index(f) for f in ANCHORS]], axis=1)
    corrected = apply_offsets(points, families, offsets, anchor_ref)
    if reference == "agreement":
        target = leave_one_out(corrected, families, ConsensusModel())  # (F, K, 98, 2): no reference, no prior weights
    weights = fit_weights(corrected, families, target, np.array(groups))
    weights_total = fit_weights(corrected, families, target)
    return {
        "regions": list(REGIONS), "default_weight": 1.0,
        "constants": {"point_scale": 0.08, "frame_scale": 0.08, "agree": 0.15},
        "anchors": ANCHORS,
        "weights": {f: [round(w, 4) for w in ws] for f, ws in weights.items()},
        "weights_with_offset_error": {f: [round(w, 4) for w in ws] for f, ws in weights_total.items()},
        "offsets": {f: np.round(o, 4).tolist() for f, o in offsets.items()},
        "provenance": f"benchmarks/label_quality.py --fit --fit-on {source} --fit-reference {reference}: demo "
                      "videos of astronaut, t1face1, t1face3, t1face5 (fit half); offsets: median face-frame offset "
                      "of each family from the mean of the anchor families (no reference); weights: 1 / mean "
                      "squared error against the target (for 'agreement' the robust consensus of the other "
                      "families, for 'reference' the demo's model reference) per region, each video's mean error "
                      "removed (scatter under degradation, not the target's own offset), normalised to 1 per region",
    }


# ------------------------------------------------------------------------------------------------- evaluation


def consensus_variants(v: dict[str, Any], cmodel: ConsensusModel, pipeline_models: list[str]) -> dict[str, np.ndarray]:
    """Per alternative rule, the labels (F, 98, 2) of one video on its reference frames."""
    _mp = model_points(v["rows"], v["frames"])
    mp, names, fams = _mp.points, _mp.models, _mp.families

    def fam(models: list[str]) -> tuple[np.ndarray, list[str]]:
        idx = [names.index(m) for m in models if m in names]
        return family_points(mp[:, idx], [fams[i] for i in idx])

    out = {"today": robust_consensus(*fam(TODAY), ConsensusModel(), iterations=0).points}
    out["robust dlib+mesh"] = robust_consensus(*fam(TODAY), cmodel).points
    out["median, all"] = robust_consensus(*fam(names), ConsensusModel(), iterations=0).points
    out["robust, all"] = robust_consensus(*fam(names), cmodel).points
    return out


RULES = ["today", "robust dlib+mesh", "median, all", "robust, all"]


def agreement(mp: np.ndarray, names: list[str], fams: list[str], raw: np.ndarray, cmodel: ConsensusModel,
              pipeline_models: list[str]) -> dict[str, np.ndarray]:
    """Reference-free NME per frame: each model against the robust consensus of the *other* pipeline families, and the
    consensus as the mean over the full families f of (consensus of the pipeline families but f) against f."""
    fam_pts, fam_names = family_points(mp, fams)
    pipe = {fams[names.index(m)] for m in pipeline_models if m in names}
    out: dict[str, np.ndarray] = {}
    cache: dict[str, np.ndarray] = {}

    def without(family: str) -> np.ndarray:
        if family not in cache:
            idx = [i for i, f in enumerate(fam_names) if f in pipe and f != family]
            cache[family] = robust_consensus(fam_pts[:, idx], [fam_names[i] for i in idx], cmodel).points
        return cache[family]

    for k, name in enumerate(names):
        out["agree:" + name] = nme(mp[:, k], without(fams[k]))
    held = [f for f in FULL_FAMILIES if f in pipe]
    if held:
        out["agree:consensus"] = np.nanmean([nme(without(f), fam_pts[:, fam_names.index(f)]) for f in held], axis=0)
    return out


def evaluate(videos: list[dict[str, Any]], params: Any, cmodel: ConsensusModel,
             pipeline_models: list[str]) -> dict[str, Any]:
    """Per frame: NME of every model, of the pipeline's consensus (on all points and on each model's points) and of
    the alternative rules, all as distances to the model reference; per video: the score components, the distance
    to the reference and the flicker."""
    per_frame: list[dict[str, Any]] = []
    per_video: list[dict[str, Any]] = []
    for v in videos:
        rows = v["rows"]
        keep = pa.compute.is_in(rows.column("model"), pa.array(pipeline_models))
        labels = video_labels(rows.filter(keep), params, v["faces"], cmodel)
        pos = {int(f): i for i, f in enumerate(labels.frames)}
        idx = np.array([pos.get(int(f), -1) for f in v["frames"]])
        have = idx >= 0
        frames, ref = v["frames"][have], v["reference"][have]
        sel = idx[have]
        valid = labels.valid[sel]
        base = {"video_id": v["video_id"], "level": v["level"], "split": v["split"], "scenario": v["scenario"]}
        raw, final = labels.raw[sel], labels.points[sel]
        rec = {**base, "frames": frames, "valid": valid,
               "consensus": nme(raw, ref), "consensus_68": nme(raw, ref, POINTS68),
               "smoothed": nme(final, ref), "smoothed_68": nme(final, ref, POINTS68),
               "consensus_valid": np.where(valid, nme(raw, ref), np.nan)}
        _mp = model_points(rows, frames)
        mp, names, fams = _mp.points, _mp.models, _mp.families
        for k, name in enumerate(names):
            own = np.flatnonzero(np.isfinite(mp[:, k]).all(-1).any(0))
            labelled = np.isfinite(mp[:, k]).all(-1).any(-1)
            rec[name] = nme(mp[:, k], ref)
            rec["cons@" + name] = np.where(labelled, nme(raw, ref, own), np.nan)
            if len(own) >= 68:
                rec[name + "_68"] = nme(mp[:, k], ref, np.intersect1d(POINTS68, own))
        for rule, pts in consensus_variants({**v, "frames": frames}, cmodel, pipeline_models).items():
            rec[rule] = nme(pts, ref)
            rec[rule + "_68"] = nme(pts, ref, POINTS68)
        rec.update(agreement(mp, names, fams, raw, cmodel, pipeline_models))
        per_frame.append(rec)
        score = video_score(v["video_id"], labels, params)
        per_video.append({**base, **{k: score[k] for k in ("status", "disagreement", "instability", "confidence",
                                                           "valid_share")},
                          "uncertainty": score.get("uncertainty"), "reference_distance": float(np.nanmean(
                              nme(final, ref)[valid])) if valid.any() else float("nan"),
                          "flicker_raw": flicker(raw, ref, frames, valid),
                          "flicker_smoothed": flicker(final, ref, frames, valid),
                          "nme_raw": float(np.nanmean(nme(raw, ref)[valid])) if valid.any() else float("nan")})
    return {"per_frame": per_frame, "per_video": per_video}


def single_model_check(per_frame: list[dict[str, Any]], models: list[str], split: str | None) -> list[dict[str, Any]]:
    """Per level: the consensus's NME on each model's own points ÷ that model's NME (same frames, same points)."""
    out = []
    recs = [r for r in per_frame if split is None or r["split"] == split]
    for level in sorted({r["level"] for r in recs}):
        sub = [r for r in recs if r["level"] == level]
        row: dict[str, Any] = {"level": level}
        for m in models:
            mine = np.concatenate([r[m] for r in sub if m in r])
            cons = np.concatenate([r["cons@" + m] for r in sub if m in r])
            ok = np.isfinite(mine) & np.isfinite(cons)
            row[m] = round(float(cons[ok].mean() / mine[ok].mean()), 3) if ok.any() else None
        row["worst"] = max(v for k, v in row.items() if k != "level" and v is not None)
        out.append(row)
    return out


def level_table(per_frame: list[dict[str, Any]], columns: list[str], split: str | None) -> list[dict[str, Any]]:
    """Mean per-frame NME per level (frames of every label, valid or not) and the valid share."""
    out = []
    recs = [r for r in per_frame if split is None or r["split"] == split]
    for level in sorted({r["level"] for r in recs}):
        sub = [r for r in recs if r["level"] == level]
        row: dict[str, Any] = {"level": level, "videos": len(sub), "frames": int(sum(len(r["frames"]) for r in sub)),
                               "valid_share": float(np.mean(np.concatenate([r["valid"] for r in sub])))}
        for c in columns:
            vals = np.concatenate([r[c] for r in sub if c in r] or [np.array([np.nan])])
            row[c] = round(float(np.nanmean(vals)), 3) if np.isfinite(vals).any() else None
        out.append(row)
    return out


def score_summary(per_video: list[dict[str, Any]], n_hard: int) -> dict[str, Any]:
    """Spearman of the score and of each component with the distance to the model reference (not a true error: the
    reference is two voters' output); hard ÷ easy distance."""
    ok = [r for r in per_video if r["status"] == "ok" and np.isfinite(r["reference_distance"])]
    err = np.array([r["reference_distance"] for r in ok])
    out: dict[str, Any] = {"videos": len(ok)}
    for key, sign in (("uncertainty", 1), ("disagreement", 1), ("instability", 1), ("confidence", -1),
                      ("valid_share", -1)):
        vals = np.array([sign * r[key] for r in ok], float)
        out[f"spearman_{key}"] = round(float(spearmanr(vals, err).statistic), 3) if np.isfinite(vals).all() else None
    ranked = select_subsets([dict(r) for r in ok], n_hard)
    hard = [r["reference_distance"] for r in ranked if r.get("subset") == "hard"]
    easy = [r["reference_distance"] for r in ranked if r.get("subset") == "easy"]
    out.update(n_hard=len(hard), n_easy=len(easy), hard_error=round(float(np.mean(hard)), 3),
               easy_error=round(float(np.mean(easy)), 3), hard_over_easy=round(float(np.mean(hard) / np.mean(easy)), 2),
               hard_levels=sorted(r["level"] for r in ranked if r.get("subset") == "hard"))
    return out


def flicker_table(per_video: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for level in sorted({r["level"] for r in per_video}):
        sub = [r for r in per_video if r["level"] == level]
        out.append({"level": level, "flicker_raw": round(float(np.nanmean([r["flicker_raw"] for r in sub])), 3),
                    "flicker_smoothed": round(float(np.nanmean([r["flicker_smoothed"] for r in sub])), 3)})
    return out


# --------------------------------------------------------------------------------------------------- timing


def timing(demo_rows: pd.DataFrame, pipeline_models: list[str], n_videos: int = 4) -> dict[str, Any]:
    """On the faces stage's boxes of one clip per level: each model's ms per face (``predict`` on fully decoded
    frames) with the box as tracked (``given``) and in its label-stage crop mode, and the label stage's ms per frame
    (decode, canvas and rows included; one thread) for the configuration before issue #17 and the pipeline's,
    interleaved clip by clip so that machine load hits both alike."""
    from pipeline.landmarks.label import create_model, label_video
    from pipeline.video import iter_frames

    torch.set_num_threads(1)
    levels = demo_rows[demo_rows.has_truth].groupby("video_id").difficulty.first()
    faces = rows_by_video(read_table(CACHE / "faces.parquet", "faces"))
    clips = {c["video_id"]: c["path"] for c in read_table(ROOT / "manifests" / "clips.parquet", "clips").to_pylist()}
    vids = [next(v for v in sorted(levels.index) if levels[v] == lv and v in faces) for lv in range(4)][:n_videos]
    models = {(m, "given"): create_model(m, "given") for m in MODELS}
    models.update({(m, "label"): create_model(m) for m in MODELS if m in FULL_MODELS})
    per_model: dict[tuple[str, str], list[float]] = {k: [] for k in models}
    configs: dict[str, tuple[list[str], str | None]] = {"before": BEFORE, "pipeline": (pipeline_models, None)}
    stage_ms = dict.fromkeys(configs, 0.0)
    frames_done = 0
    for vid in vids:
        t = faces[vid]
        boxes = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("x1", "y1", "x2", "y2")], 1)
        valid = np.asarray(t.column("valid").to_numpy(zero_copy_only=False), bool)
        rolls = t.column("roll").to_numpy(zero_copy_only=False)
        path = ROOT / clips[vid]
        for f in iter_frames(path):
            if not valid[f.index]:
                continue
            for pair, model in models.items():
                start = time.perf_counter()
                model.predict(f.rgb, boxes[f.index].astype(np.float32))
                per_model[pair].append(1000 * (time.perf_counter() - start))
        for names, crop in configs.values():
            label_video(vid, path, boxes, names, valid, rolls, crop=crop)  # type: ignore[arg-type]  # warm caches
        for config, (names, crop) in configs.items():
            start = time.perf_counter()
            label_video(vid, path, boxes, names, valid, rolls, crop=crop)  # type: ignore[arg-type]
            stage_ms[config] += 1000 * (time.perf_counter() - start)
        frames_done += int(valid.sum())
    out: dict[str, Any] = {"videos": vids, "frames": frames_done, "torch_threads": 1,
                           "ms_per_face_median": {f"{m} ({c})": round(float(np.median(v)), 2)
                                                  for (m, c), v in per_model.items()},
                           "ms_per_face_mean": {f"{m} ({c})": round(float(np.mean(v)), 2)
                                                for (m, c), v in per_model.items()}}
    for config, (names, crop) in configs.items():
        mode = "given" if crop == "given" else "label"
        own = sum(float(np.mean(per_model[(m, mode if m in FULL_MODELS else "given")])) for m in names)
        per_frame = stage_ms[config] / frames_done
        out[config] = {"models": names, "crop": crop or "conventions.json",
                       "label_stage_ms_per_frame": round(per_frame, 2), "models_sum_ms_per_face": round(own, 2),
                       "ratio": round(per_frame / own, 2)}
    return out


# ----------------------------------------------------------------------------------------------------- main


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |\n" for r in rows)


def report_block(ev: dict[str, Any], params: Any) -> dict[str, Any]:
    model_cols = [m for m in MODELS if any(m in r for r in ev["per_frame"])]
    agree_cols = ["agree:" + m for m in model_cols] + ["agree:consensus"]
    block: dict[str, Any] = {}
    for split in ("held_out", "fit", None):
        block[split or "all"] = {
            "nme_all_points": level_table(ev["per_frame"], model_cols + RULES
                                          + ["consensus", "smoothed", "consensus_valid"], split),
            "nme_68": level_table(ev["per_frame"], [c + "_68" for c in model_cols + RULES]
                                  + ["consensus_68", "smoothed_68"], split),
            "agreement": level_table(ev["per_frame"], agree_cols, split),
            "consensus_over_model_same_points": single_model_check(ev["per_frame"], model_cols, split),
        }
    block["score"] = score_summary(ev["per_video"], params.n_hard)
    block["flicker"] = flicker_table(ev["per_video"])
    block["per_video"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                          for r in ev["per_video"]]
    print(markdown(block["per_video"], ["video_id", "level", "status", "uncertainty", "disagreement",
                                        "instability", "confidence", "valid_share", "reference_distance"]))
    for split in ("held_out", "all"):
        print(f"\n### {split}: distance % to the demo's model reference (model output, not truth; all points each "
              "supplies)\n")
        print(markdown(block[split]["nme_all_points"], ["level", "frames", "valid_share"] + model_cols + RULES
                       + ["consensus", "smoothed", "consensus_valid"]))
        print(f"### {split}: agreement NME % (no reference: vs the other families' consensus)\n")
        print(markdown(block[split]["agreement"], ["level"] + agree_cols))
        print(f"### {split}: consensus ÷ model on the model's own points\n")
        print(markdown(block[split]["consensus_over_model_same_points"], ["level"] + model_cols + ["worst"]))
    print(f"### score\n\n{json.dumps(block['score'])}\n")
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--modes", default="given,measured,refined", help="crop modes to collect and compare")
    parser.add_argument("--truth-boxes", action="store_true", help="also collect with the truth boxes")
    parser.add_argument("--videos", help="comma-separated video ids to collect (default: every still-based clip)")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--fit-on", default="facebox_label", help="the run the weights are fitted on")
    parser.add_argument("--fit-reference", choices=["agreement", "reference"], default="agreement",
                        help="weights against the other families' consensus (default), or against the demo's model "
                             "reference (circular: it is dlib + mesh output; only to show that bias)")
    parser.add_argument("--weights-before", type=Path,
                        help="weights.json of the labels before this change: adds the 'before' configuration")
    parser.add_argument("--also", action="append", default=[],
                        help="NAME=model,model,...: another model set evaluated on the last mode's run (repeatable)")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--models", help="comma-separated models instead of params label.models (to compare sets)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    demo_rows = pd.read_parquet(ROOT / "data" / "demo" / "truth.parquet")
    modes = args.modes.split(",")
    if args.collect:
        collect(demo_rows, modes, args.truth_boxes, args.videos.split(",") if args.videos else None)
    faces = CACHE / "faces.parquet"
    if args.fit:
        payload = fit(load_videos(CACHE / f"{args.fit_on}.parquet", demo_rows, faces), args.fit_on, args.fit_reference)
        write_json(WEIGHTS_FILE, payload)
        load_consensus_model.cache_clear()
    params = stage_params("score", PROJECT_PARAMS)
    cmodel = load_consensus_model(use_offsets=params.offsets)
    pipeline_models = args.models.split(",") if args.models else list(stage_params("label", PROJECT_PARAMS).models)
    result: dict[str, Any] = {"pipeline_models": pipeline_models, "score_params": params.model_dump(mode="json"),
                              "machine": f"{platform.machine()}, {platform.python_version()}, cpu"}
    configs: list[tuple[str, Path, Path | None, list[str], ConsensusModel]] = []
    if args.weights_before and (CACHE / "facebox_given.parquet").is_file():
        before = load_consensus_model(args.weights_before.resolve(), use_offsets=params.offsets)
        configs.append(("before: labels v2 (crop given, its 6 models, its weights)", CACHE / "facebox_given.parquet",
                        faces, BEFORE[0], before))
    if (CACHE / "truthbox.parquet").is_file():
        configs.append(("truth boxes, crop given", CACHE / "truthbox.parquet", None, pipeline_models, cmodel))
    for mode in modes:
        configs.append((f"faces-stage boxes, crop {mode}", CACHE / f"facebox_{mode}.parquet", faces, pipeline_models,
                        cmodel))
    for extra in args.also:
        name, models = extra.split("=")
        configs.append((f"faces-stage boxes, crop {modes[-1]}, {name}", CACHE / f"facebox_{modes[-1]}.parquet",
                        faces, models.split(","), cmodel))
    for label, cache, face_rows, models, cm in configs:
        if not cache.is_file():
            continue
        print(f"\n## {label}: {', '.join(models)}\n")
        ev = evaluate(load_videos(cache, demo_rows, face_rows), params, cm, models)
        result[label] = {"models": models, **report_block(ev, params)}
    if args.timing:
        result["timing"] = timing(demo_rows, pipeline_models)
        print(json.dumps(result["timing"], indent=1))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
