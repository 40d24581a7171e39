"""Faces stage on the demo truth: is the main-face box right on every frame, and how much does it jitter?

A box is right when its centre lies within 0.25 × the true box size of the true centre and its size is within
[0.5, 2] × the true size. Frames whose true face is less than half inside the frame (``visible`` false) are right
when the stage marks them not valid. Also reports, per level and scenario, the share of valid frames, the sources,
the box jitter (mean |second difference| of the box centre, in % of the true box size) before and after smoothing,
next to the true face's own (the demo camera shakes by design), and the stage's frames/s against decode-only frames/s.

    python benchmarks/faces_quality.py            # needs data/demo (python -m stages.demo) and the model files
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.faces.process import track_main_face  # noqa: E402
from pipeline.landmarks.adapters import create_landmark_model  # noqa: E402
from pipeline.manifest import write_json  # noqa: E402
from pipeline.params import PROJECT_PARAMS, FacesParams, stage_params  # noqa: E402
from pipeline.video import VideoWriter, iter_frames, read_frames  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "faces_quality.json"


def _clip(video_id: str, lead: int, n: int, out_dir: Path) -> Path:
    """The demo clip window as the trim stage would cut it (lossless here, so only the window differs)."""
    path = out_dir / f"{video_id}.mp4"
    if not path.is_file():
        frames = read_frames(ROOT / "data" / "demo" / "raw" / f"{video_id}.mp4", range(lead, lead + n))
        with VideoWriter(path, fps=30, crf=0) as out:
            for frame in frames:
                out.write(frame)
    return path


def _run(args: tuple[str, str, FacesParams]) -> dict:
    video_id, clip, params = args
    started = time.perf_counter()
    result = track_main_face(video_id, clip, params, create_landmark_model)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    n = sum(1 for _ in iter_frames(clip))
    decode = time.perf_counter() - started
    return {"video_id": video_id, "status": result["status"]["status"], "rows": result["rows"], "seconds": seconds,
            "decode_seconds": decode, "n_frames": n}


def _jitter(centres: np.ndarray, size: np.ndarray) -> float:
    """Mean |second difference| of the box centre per frame, in % of the true box size: how much a box shakes
    beyond steady motion (a smooth pan has none; a detector's cell jumps and noise have a lot)."""
    accel = np.linalg.norm(np.diff(centres, n=2, axis=0), axis=1) / size[2:]
    return float(100 * np.nanmean(accel)) if np.isfinite(accel).any() else float("nan")


def main() -> int:
    demo = stage_params("demo", PROJECT_PARAMS)
    truth = pd.read_parquet(ROOT / "data" / "demo" / "truth.parquet")
    truth = truth[truth.has_truth]
    work = ROOT / "data" / "_bench_faces"
    work.mkdir(parents=True, exist_ok=True)
    ids = sorted(truth.video_id.unique())
    params = stage_params("faces", PROJECT_PARAMS)
    jobs = [(v, str(_clip(v, demo.lead_frames, demo.clip_frames, work)), params) for v in ids]
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_run, jobs))
    per_video = []
    for r in results:
        t = truth[truth.video_id == r["video_id"]].sort_values("frame")
        gt = t[["x1", "y1", "x2", "y2"]].to_numpy(float)
        gs = np.maximum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1])
        visible = t.visible.to_numpy(bool)
        row = {"video_id": r["video_id"], "level": int(t.difficulty.iloc[0]), "scenario": t.scenario.iloc[0],
               "status": r["status"], "frames": len(t), "visible": int(visible.sum())}
        if r["rows"]:
            f = pd.DataFrame(r["rows"]).sort_values("frame")
            box = f[["x1", "y1", "x2", "y2"]].to_numpy(float)
            raw = np.stack([np.full(4, np.nan) if b is None else np.asarray(b, float) for b in f.raw_box])
            valid = f.valid.to_numpy(bool)
            bs = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
            dist = np.hypot((box[:, 0] + box[:, 2] - gt[:, 0] - gt[:, 2]) / 2,
                            (box[:, 1] + box[:, 3] - gt[:, 1] - gt[:, 3]) / 2) / gs
            good = valid & (dist < 0.25) & (bs / gs > 0.5) & (bs / gs < 2)
            right = np.where(visible, good, ~valid)
            centre_gt = (gt[:, :2] + gt[:, 2:]) / 2
            row.update(right=int(right.sum()), valid=int(valid.sum()),
                       sources=f.source.value_counts().to_dict(),
                       jitter_raw=_jitter((raw[:, :2] + raw[:, 2:]) / 2, gs),
                       jitter_smoothed=_jitter((box[:, :2] + box[:, 2:]) / 2, gs),
                       jitter_truth=_jitter(centre_gt, gs))
        else:
            row.update(right=int((~visible).sum()), valid=0, sources={}, jitter_raw=float("nan"),
                       jitter_smoothed=float("nan"), jitter_truth=float("nan"))
        per_video.append(row)
    table = pd.DataFrame(per_video)
    summary = []
    for (scenario, level), g in table.groupby(["scenario", "level"]):
        summary.append({"scenario": scenario, "level": level, "videos": len(g),
                        "box_right": round(g.right.sum() / g.frames.sum(), 4),
                        "valid_share": round(g.valid.sum() / g.frames.sum(), 4),
                        "no_face_with_visible_face": int(((g.status == "no_face") & (g.visible > 0)).sum()),
                        "jitter_raw_pct": round(float(g.jitter_raw.mean()), 3),
                        "jitter_smoothed_pct": round(float(g.jitter_smoothed.mean()), 3),
                        "jitter_truth_pct": round(float(g.jitter_truth.mean()), 3)})
    total = sum(r["seconds"] for r in results)
    decode = sum(r["decode_seconds"] for r in results)
    frames = sum(r["n_frames"] for r in results)
    speed = {"frames": frames, "stage_fps": round(frames / total, 2), "decode_fps": round(frames / decode, 1)}
    write_json(RESULTS, {"params": params.model_dump(), "summary": summary, "speed": speed, "per_video": per_video})
    print(pd.DataFrame(summary).to_string(index=False))
    print(speed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
