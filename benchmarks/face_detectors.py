"""Face detectors compared: speed at 640×480 and 1280×720, and recall / box error per demo difficulty level.

Accuracy is measured on the demo (``data/demo``: ``truth.parquet`` + ``raw/*.mp4``; build it with
``python -m stages.demo --out data/demo``). A detection is "right" when its centre is within 0.25 × the true box size
of the true centre and its size is within [0.5, 2] × the true size (size = √(w·h)). Per level: recall (frames with
a right box), centre offset and size ratio of the right boxes (each model's box convention against the truth box,
which is dlib HOG's box carried through the known warp), 5-point distance of the right boxes' keypoints to the
demo's model-reference landmarks (÷ inter-ocular distance; dlib + MediaPipe mesh output, not truth), and other
detections per frame. Besides the camera clips (levels d0-d3) the demo has ``rolled`` clips (head rolled 20-45°)
and ``exit`` clips (frames with less than half the face in view are skipped). Carphone clips (real video, no
geometric truth) report the share of frames with any detection.
Two harder conditions are derived from every ``3·stride``-th camera truth frame with the truth carried along:
``small`` (frame shrunk ×0.25 onto a grey 640×480 canvas, faces 25-45 px) and ``roll45`` (frame rolled 45°).
Fused and rotation-search rows reuse their members' detections, so their time is the members' summed time
(rotation search adds time only on frames with no upright hit).

    python benchmarks/face_detectors.py --stride 5 --out benchmarks/results/face_detectors.json
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import cv2
import numpy as np

from ldeq.geometry import apply_affine
from pipeline.faces.detectors import Detections, ModelUnavailable, create_detector
from pipeline.faces.detectors.fusion import fuse
from pipeline.faces.detectors.search import RotatedSearch, rotate_frame
from pipeline.manifest import write_json
from pipeline.video import iter_frames

BASE = ("dlib_hog", "blazeface_short", "blazeface_full", "retinaface", "centerface", "yunet", "mtcnn", "scrfd")
FUSED = {"fused(retinaface,yunet,mtcnn;2)": (("retinaface", "yunet", "mtcnn"), 2),
         "fused(retinaface,yunet,mtcnn;1)": (("retinaface", "yunet", "mtcnn"), 1)}
ROTATED = ("retinaface", "yunet")
ANGLES = (30.0, -30.0, 60.0, -60.0)
WFLW5 = (96, 97, 54, 76, 82)  # WFLW-98: image-left pupil, image-right pupil, nose tip, mouth corners


def box_match(boxes: np.ndarray, truth: np.ndarray) -> tuple[int | None, float, float, float]:
    """Index of the best right box (or None), and its centre offset x, y (÷ true size) and size ratio."""
    size = np.sqrt(np.prod(truth[2:] - truth[:2]))
    centre = (truth[:2] + truth[2:]) / 2
    if len(boxes) == 0:
        return None, np.nan, np.nan, np.nan
    offset = ((boxes[:, :2] + boxes[:, 2:]) / 2 - centre) / size
    ratio = np.sqrt(np.clip(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 0, None)) / size
    right = (np.linalg.norm(offset, axis=1) <= 0.25) & (ratio >= 0.5) & (ratio <= 2.0)
    if not right.any():
        return None, np.nan, np.nan, np.nan
    k = int(np.flatnonzero(right)[np.argmin(np.linalg.norm(offset[right], axis=1))])
    return k, float(offset[k, 0]), float(offset[k, 1]), float(ratio[k])


def demo_frames(demo: Path, stride: int) -> list[dict[str, Any]]:
    """Every ``stride``-th clip frame of every demo video with its truth, frames decoded."""
    import pyarrow.parquet as pq

    rows = pq.read_table(demo / "truth.parquet").to_pylist()
    starts = {}
    with (demo / "sources.csv").open() as fh:
        for src in csv.DictReader(fh):
            starts[src["video_id"]] = (src["url"].removeprefix("file:"), int(src["start_frame"]))
    by_video: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, row in enumerate(rows):
        if row["frame"] % stride == 0:
            by_video.setdefault(row["video_id"], []).append((i, row))
    items = []
    for video_id, wanted in sorted(by_video.items()):
        path, start = starts[video_id]
        want = {start + row["frame"]: row for _, row in wanted}
        for frame in iter_frames(Path(path), start=min(want), stop=max(want) + 1):
            if frame.index in want:
                row = want[frame.index]
                scenario = row.get("scenario", "camera")
                if scenario == "exit" and not row.get("visible", True):
                    continue  # less than half the face in frame: neither a miss nor a false hit
                has = bool(row["has_truth"])
                group = f"d{row['difficulty']}" if scenario == "camera" else scenario
                items.append({
                    "video_id": video_id, "group": group if has else "carphone", "media": row["media"],
                    "rgb": frame.rgb, "box": np.array([row[k] for k in ("x1", "y1", "x2", "y2")], np.float32)
                    if has else None,
                    "points": np.asarray(row["reference_landmarks"], np.float32)[list(WFLW5)] if has else None,
                })
    return items


def derived(items: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The ``small`` and ``roll45`` conditions from every ``every``-th camera-scenario truth frame, truth mapped
    along."""
    out = []
    for item in [i for i in items if i["box"] is not None and i["group"].startswith("d")][::every]:
        small = cv2.resize(item["rgb"], None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        canvas = np.full((480, 640, 3), 118, np.uint8)
        top, left = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
        shift = np.array([left, top], np.float32)
        out.append({**item, "group": "small", "rgb": canvas, "box": item["box"] * 0.25 + np.tile(shift, 2),
                    "points": item["points"] * 0.25 + shift})
        rolled, back = rotate_frame(item["rgb"], 45)
        forward = cv2.invertAffineTransform(back)
        c = apply_affine((item["box"][:2] + item["box"][2:]) / 2, forward)
        half = (item["box"][2:] - item["box"][:2]) / 2  # same face size; the box only moves with the centre
        out.append({**item, "group": "roll45", "rgb": rolled, "box": np.concatenate([c - half, c + half]),
                    "points": apply_affine(item["points"], forward)})
    return out


def speed(detector: Any, frame: np.ndarray, reps: int) -> dict[str, float]:
    """Best and median ms per detect() over ``reps`` calls after a warm-up (best: least disturbed by other jobs)."""
    detector.detect(frame)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        detector.detect(frame)
        times.append(time.perf_counter() - t)
    return {"best": round(1000 * min(times), 2), "median": round(1000 * float(np.median(times)), 2)}


def summarise(results: list[tuple[dict[str, Any], Detections]]) -> dict[str, Any]:
    """Per-level accuracy of one detector from (frame item, detections) pairs."""
    levels: dict[str, Any] = {}
    for level in sorted({item["group"] for item, _ in results}):
        rows = [(item, det) for item, det in results if item["group"] == level and item["box"] is not None]
        if not rows:
            continue
        hits, dx, dy, ratio, kp, extra = 0, [], [], [], [], []
        for item, det in rows:
            k, ox, oy, r = box_match(det.boxes, item["box"])
            extra.append(len(det) - (k is not None))
            if k is None:
                continue
            hits += 1
            dx.append(ox)
            dy.append(oy)
            ratio.append(r)
            if det.keypoints5 is not None and item["points"] is not None and np.isfinite(det.keypoints5[k]).all():
                truth = item["points"]
                iod = np.linalg.norm(truth[0] - truth[1])
                kp.append(float(np.linalg.norm(det.keypoints5[k] - truth, axis=1).mean() / iod))
        levels[level] = {
            "frames": len(rows), "recall": hits / len(rows),
            "centre_dx": float(np.median(dx)) if dx else None, "centre_dy": float(np.median(dy)) if dy else None,
            "size_ratio": float(np.median(ratio)) if ratio else None,
            "kp5_nme": float(np.mean(kp)) if kp else None, "extra_per_frame": float(np.mean(extra)),
        }
    real = [det for item, det in results if item["box"] is None]
    demo = [(item, det) for item, det in results if item["box"] is not None and item["group"].startswith("d")]
    return {
        "levels": levels,
        "recall_demo": sum(box_match(d.boxes, i["box"])[0] is not None for i, d in demo) / max(len(demo), 1),
        "carphone_hit_rate": (sum(len(d) > 0 for d in real) / len(real)) if real else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("data/demo"))
    parser.add_argument("--stride", type=int, default=3, help="use every n-th clip frame")
    parser.add_argument("--detectors", nargs="*", default=list(BASE))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/face_detectors.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    detectors, unavailable = {}, {}
    for name in args.detectors:
        try:
            detectors[name] = create_detector(name, threads=args.threads)
        except ModelUnavailable as err:
            unavailable[name] = str(err)
            logging.info("%s unavailable: %s", name, err)

    items = demo_frames(args.demo, args.stride)
    items += derived(items, 3)
    still = next(item["rgb"] for item in items if item["box"] is not None)
    frames = {"640x480": cv2.resize(still, (640, 480)), "1280x720": cv2.resize(still, (1280, 720))}
    report: dict[str, Any] = {}
    for name, det in detectors.items():
        timing = {k: speed(det, f, args.reps) for k, f in frames.items()}
        report[name] = {"version": det.version, "ms": {k: v["best"] for k, v in timing.items()},
                        "ms_median": {k: v["median"] for k, v in timing.items()}}
        logging.info("%s: %s", name, report[name]["ms"])

    outputs: dict[str, list[Detections]] = {name: [] for name in detectors}
    seconds = dict.fromkeys(detectors, 0.0)
    rot_outputs = {name: [] for name in ROTATED if name in detectors}
    rot_seconds = dict.fromkeys(rot_outputs, 0.0)
    for n, item in enumerate(items):
        for name, det in detectors.items():
            t = time.perf_counter()
            outputs[name].append(det.detect(item["rgb"]))
            seconds[name] += time.perf_counter() - t
        for name in rot_outputs:
            found = outputs[name][-1]
            t = time.perf_counter()
            if len(found) == 0:  # the same search as RotatedSearch, reusing the upright pass already made
                found = RotatedSearch(detectors[name], ANGLES).search(item["rgb"])
            rot_outputs[name].append(found)
            rot_seconds[name] += time.perf_counter() - t
        if n % 100 == 0:
            logging.info("frame %d / %d", n, len(items))
    for name in detectors:
        report[name].update(summarise(list(zip(items, outputs[name]))), demo_ms=1000 * seconds[name] / len(items))
    for name in rot_outputs:
        report[f"{name}+rot"] = {
            "version": f"{detectors[name].version}+rot", "ms": report[name]["ms"],
            "ms_median": report[name]["ms_median"],
            "demo_ms": 1000 * (seconds[name] + rot_seconds[name]) / len(items),
            **summarise(list(zip(items, rot_outputs[name]))),
        }
    for label, (members, votes) in FUSED.items():
        if not all(m in detectors for m in members):
            continue
        fused = [fuse([outputs[m][i] for m in members], votes, 0.3) for i in range(len(items))]
        report[label] = {
            "version": f"vote{votes}/" + "+".join(members),
            "ms": {k: round(sum(report[m]["ms"][k] for m in members), 2) for k in frames},
            "ms_median": {k: round(sum(report[m]["ms_median"][k] for m in members), 2) for k in frames},
            "demo_ms": sum(report[m]["demo_ms"] for m in members), **summarise(list(zip(items, fused))),
        }
    payload = {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "threads": args.threads,
                    "load_average_at_end": os.getloadavg(),
                    "note": "cores shared with other jobs: 'ms' is the best of --reps calls, 'ms_median' the median"},
        "demo": {"frames": len(items), "stride": args.stride,
                 "per_group": {g: sum(i["group"] == g for i in items) for g in sorted({i["group"] for i in items})}},
        "rule": "centre within 0.25 x true size, size ratio in [0.5, 2]; size = sqrt(w*h)",
        "detectors": report, "unavailable": unavailable,
    }
    write_json(args.out, payload)
    print(table(payload))
    return 0


def cell(levels: dict[str, Any], group: str) -> str:
    """Recall of ``group`` for the table, a dash where the demo has no such frames."""
    return f"{levels[group]['recall']:.2f}" if group in levels else "–"


def table(payload: dict[str, Any]) -> str:
    """Markdown table of the results (size ratio, centre offset, keypoint error and extras over levels d0-d3)."""
    lines = ["| detector | ms 640×480 | ms 1280×720 | recall d0 / d1 / d2 / d3 | rolled | exit | small | roll45 |"
             " size ratio | centre dy | 5-pt NME | extra / frame | carphone |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in payload["detectors"].items():
        lv = r["levels"]
        demo = [lv[k] for k in sorted(lv) if k.startswith("d")]
        right = [v for v in demo if v["size_ratio"] is not None]
        ratio = np.median([v["size_ratio"] for v in right]) if right else float("nan")
        dy = np.median([v["centre_dy"] for v in right]) if right else float("nan")
        kp = [v["kp5_nme"] for v in demo if v["kp5_nme"] is not None]
        extra = np.mean([v["extra_per_frame"] for v in demo])
        car = r["carphone_hit_rate"]
        recall = " / ".join(f"{v['recall']:.2f}" for v in demo)
        lines.append(
            f"| {name} | {r['ms']['640x480']:.1f} | {r['ms']['1280x720']:.1f} | "
            f"{recall} | {cell(lv, 'rolled')} | {cell(lv, 'exit')} | {cell(lv, 'small')} | "
            f"{cell(lv, 'roll45')} | {ratio:.2f} | {dy:+.2f} | "
            f"{f'{np.mean(kp):.3f}' if kp else '–'} | {extra:.2f} | {'–' if car is None else f'{car:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
