"""What a human review round buys on the demo: correct about 1 frame in 10 of the hard videos, measure the labels.

Run from the root of a project whose demo is built (``manifests/*.parquet``, ``data/demo/truth.parquet``):

    python benchmarks/review_gain.py --out benchmarks/results/review_gain.json

For each variant of the frame choice it runs ``pipeline.review export`` on the hard subset, plays the reviewer by
writing a Label Studio-style JSON export in which every chosen frame carries the demo's model-reference points (the
simulated "human" input; frames without a reference or whose reference leaves the image are left unsubmitted, as a
person would skip them), runs ``pipeline.review import`` and the annotate stage with those corrections (into
``--work``, the project's manifests are not touched) and compares the hard subset's annotations with the reference
before and after: the distance to it (the ``nme_*`` keys: % of the reference's outer-eye-corner distance) per demo
difficulty level, over every hard frame with a visible face, and split by what the frame became (human /
propagated / pseudo).

The reference is model output (dlib ERT-68 + MediaPipe mesh on the clean stills, carried through the known warp), not
truth: this measures how far corrections carry (a reviewer who agrees with the reference moves the labels onto it),
not label accuracy. With real corrections, ``benchmarks/corrections_quality.py`` measures against people's points.

Variants (``--variants``), at about the same budget: ``review`` = the params.yaml ``review`` block (keyframes every
<= keyframe_step frames plus the invalid and most uncertain frames), ``NAME=FRAMES_PER_VIDEO,KEYFRAME_STEP`` the same
with other values (``uniform=0,12``: keyframes only, 12 frames apart).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np
import pandas as pd
import yaml

from pipeline.params import load, stage_params
from pipeline.review import TASKS_FILE, ChosenFrame, export_review, frame_task, import_review

STAMP = "2026-01-01T00:00:00.000000Z"  # the "reviewer's" submission time (fixed: same corrections every run)


def nme(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-frame normalised mean distance (%): mean point distance over ``ref``'s outer-eye-corner distance (points
    60, 72)."""
    iod = np.linalg.norm(ref[:, 60] - ref[:, 72], axis=-1)
    return 100 * np.linalg.norm(pred - ref, axis=-1).mean(-1) / iod


def reference_export(tasks: list[dict[str, Any]], demo: pd.DataFrame) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The chosen frames as a Label Studio JSON export whose annotations are the model-reference points."""
    items, skipped = [], Counter[str]()
    ref = demo.set_index(["video_id", "frame"])
    for k, task in enumerate(tasks, start=1):
        data = task["data"]
        key = (data["video_id"], data["frame"])
        row = ref.loc[key] if key in ref.index else None
        if row is None or not row.has_truth or not row.visible:
            skipped["no reference"] += 1
            continue
        points = np.stack(row.reference_landmarks).astype(np.float64)
        w, h = data["width"], data["height"]
        if ((points < -0.5) | (points > [w - 0.5, h - 0.5])).any():
            skipped["reference leaves the image"] += 1
            continue
        why = ChosenFrame(data["frame"], data["reason"], data["detail"])
        result = frame_task(data["video_id"], data["frame"], data["image"], (w, h), points, why,
                            None)["predictions"][0]["result"]
        items.append({"id": k, "data": data, "predictions": task["predictions"],
                      "annotations": [{"id": k, "completed_by": 1, "result": result, "was_cancelled": False,
                                       "created_at": STAMP, "updated_at": STAMP}]})
    return items, skipped


def run_variant(name: str, overrides: dict[str, Any], args: argparse.Namespace, demo: pd.DataFrame) -> dict[str, Any]:
    work = args.work / name
    review = stage_params("review", args.params, export_dir=str(work / "review"), **overrides)
    t0 = time.monotonic()
    chosen = export_review(None, args.manifests, work / "review", review, stage_params("score", args.params))
    tasks = json.loads((work / "review" / TASKS_FILE).read_text())
    export, skipped = reference_export(tasks, demo)
    (work / "reference_export.json").write_text(json.dumps(export))
    for old in (work / "corrections").glob("*.parquet"):
        old.unlink()
    imported = import_review(work / "reference_export.json", work / "review" / TASKS_FILE, work / "corrections",
                             "reference")
    raw = load(args.params)
    raw["annotate"].update(corrections=str(work / "corrections"), export_dir=str(work / "wflw_v"))
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([sys.executable, "-m", "stages.annotate", "--params", str(work / "params.yaml"),
                    "--out", str(work / "annotations.parquet"), "--status-out", str(work / "annotate_status.parquet"),
                    "--log-level", "WARNING"], check=True)
    seconds = time.monotonic() - t0
    before = pd.read_parquet(args.manifests / "annotations.parquet")
    after = pd.read_parquet(work / "annotations.parquet")
    keys = ["video_id", "frame"]
    both = (before[before.subset == "hard"][[*keys, "landmarks", "valid"]]
            .merge(after[[*keys, "landmarks", "valid", "label_source"]], on=keys, suffixes=("_before", "_after"))
            .merge(demo[demo.has_truth & demo.visible.fillna(False)][[*keys, "difficulty", "reference_landmarks"]],
                   on=keys))
    pb = np.stack([np.stack(p) for p in both.landmarks_before]).astype(np.float64)
    pa_ = np.stack([np.stack(p) for p in both.landmarks_after]).astype(np.float64)
    ref = np.stack([np.stack(p) for p in both.reference_landmarks]).astype(np.float64)
    labelled = np.isfinite(pb).all(axis=(1, 2))
    both = both[labelled].assign(nme_before=nme(pb[labelled], ref[labelled]),
                                 nme_after=nme(pa_[labelled], ref[labelled]))
    per_level = []
    for level, rows in both.groupby("difficulty"):
        entry: dict[str, Any] = {"level": int(level), "frames": len(rows), "nme_before": rows.nme_before.mean(),
                                 "nme_after": rows.nme_after.mean()}
        valid_b, valid_a = rows[rows.valid_before.fillna(True)], rows[rows.valid_after.fillna(True)]
        entry.update(valid_frames_before=len(valid_b), valid_nme_before=valid_b.nme_before.mean(),
                     valid_frames_after=len(valid_a), valid_nme_after=valid_a.nme_after.mean())
        for source in ("human", "propagated", "pseudo"):
            part = rows[rows.label_source == source]
            entry[source] = {"frames": len(part), "nme_before": part.nme_before.mean() if len(part) else None,
                             "nme_after": part.nme_after.mean() if len(part) else None}
        per_level.append(entry)
    hard = before[before.subset == "hard"]
    by_reason_nme = {}
    reasons = pd.DataFrame([t["data"] for t in tasks])[["video_id", "frame", "reason"]]
    picked = both.merge(reasons, on=keys)
    for reason, rows in picked.groupby("reason"):
        by_reason_nme[reason] = {"frames": len(rows), "pseudo_nme": rows.nme_before.mean()}
    return {
        "review_params": review.model_dump(), "seconds": round(seconds, 1),
        "export": {**chosen, "hard_frames": len(hard), "hard_videos": int(hard.video_id.nunique()),
                   "share": chosen["frames"] / len(hard),
                   "per_video": dict(Counter(t["data"]["video_id"] for t in tasks))},
        "submitted": imported["frames"], "not_submitted": dict(skipped),
        "pseudo_nme_of_chosen_frames_by_reason": by_reason_nme,
        "hard_pseudo_nme_all_frames": float(both.nme_before.mean()),
        "levels": per_level,
        "all": {"frames": len(both), "nme_before": both.nme_before.mean(), "nme_after": both.nme_after.mean(),
                **{s: {"frames": int((both.label_source == s).sum()),
                       "nme_before": both[both.label_source == s].nme_before.mean(),
                       "nme_after": both[both.label_source == s].nme_after.mean()}
                   for s in ("human", "propagated", "pseudo")}},
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = ["Distance % to the demo's model reference (model output, not truth):", "",
             "| level | frames | before | after | human (before → after) | propagated (before → after) "
             "| pseudo (before → after) |", "|---|---|---|---|---|---|---|"]

    def cell(part: dict[str, Any]) -> str:
        if not part["frames"]:
            return "0"
        return f"{part['frames']}: {part['nme_before']:.2f} → {part['nme_after']:.2f}"

    for e in [*result["levels"], {"level": "all", **result["all"]}]:
        lines.append(f"| {e['level']} | {e['frames']} | {e['nme_before']:.2f} | {e['nme_after']:.2f} | "
                     f"{cell(e['human'])} | {cell(e['propagated'])} | {cell(e['pseudo'])} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifests", type=Path, default=Path("manifests"))
    parser.add_argument("--truth", type=Path, default=Path("data/demo/truth.parquet"),
                        help="the demo's truth.parquet (exact boxes and visibility, the landmarks' model reference)")
    parser.add_argument("--work", type=Path, default=Path("data/review_gain"), help="inside the project")
    parser.add_argument("--variants", nargs="+", default=["review", "uniform=0,12"],
                        help="frame choices to compare: 'review' (params.yaml) or NAME=FRAMES_PER_VIDEO,KEYFRAME_STEP")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    demo = pd.read_parquet(args.truth)
    results = {"machine": platform.platform(), "cpus": platform.processor() or platform.machine(), "variants": {}}
    for spec in args.variants:
        name, _, values = spec.partition("=")
        per_video, step = (int(v) for v in values.split(",")) if values else (None, None)
        overrides = {} if values == "" else {"frames_per_video": per_video, "keyframe_step": step}
        result = run_variant(name, overrides, args, demo)
        results["variants"][name] = result
        e = result["export"]
        print(f"\n{name}: {e['frames']} frames of {e['hard_frames']} ({e['share']:.1%}) in {e['videos']} hard videos, "
              f"by reason {e['by_reason']}; submitted {result['submitted']}, not {result['not_submitted']}; "
              f"{result['seconds']} s")
        by_reason = result["pseudo_nme_of_chosen_frames_by_reason"]
        print("pseudo-label distance to the reference of the chosen frames by reason: "
              + ", ".join(f"{r} {v['pseudo_nme']:.2f} ({v['frames']})" for r, v in by_reason.items())
              + f"; all hard frames {result['hard_pseudo_nme_all_frames']:.2f}")
        print("\n".join(table(result)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
