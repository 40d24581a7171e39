"""The dataset build at scale: N synthetic videos through sources → annotate, run as the stages run (``python -m
stages.<name>``), measuring what the scale work promises.

* per stage: wall time, frames/s and the **client's** peak RSS (the stage process itself, not its dask workers: read
  from ``/proc/self/status`` VmHWM as the stage exits);
* the label stage's client peak RSS for a quarter of the videos and for all of them: the slope in KB per frame;
* a rerun after one more source row: what trim, faces and label computed (``logs/timings``);
* ``kill -9`` of the label stage mid-run after a label change, then the rerun: videos reused and computed.

Media are the embedded demo's source videos (build the demo first), cut to ``--frames`` frames and, for every
``--hd-every``-th video, re-encoded at 1280×720; each synthetic video has its own id, so nothing is reused across ids.

    python benchmarks/scale.py --videos 48 --workers 2 --out benchmarks/results/scale.json
    python benchmarks/scale.py --videos 4 --frames 20 --workers 1 --out /tmp/scale_smoke.json   # smoke run
    python benchmarks/scale.py --demo-rss --out benchmarks/results/scale_demo_rss.json  # label client RSS, 7 vs 28
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.manifest import ManifestWriter, iter_videos  # noqa: E402
from pipeline.video import VideoWriter, iter_frames  # noqa: E402

STAGES = ["sources", "download", "trim", "faces", "label", "score", "annotate"]
#: WFLW-V's official list and the candidate windows it was chosen from (frames: 137,730 and ≈ 4,776 × 137.7).
TARGETS = {"wflw_v": 137_730, "candidates": round(4_776 * 137.73)}

# Run a stage module as ``python -m`` does, then print the process's peak RSS (VmHWM) on the way out.
_RUNNER = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print(f"PEAK_RSS_KB {hwm}", file=sys.stderr)
"""


def make_media(project: Path, n: int, frames: int, hd_every: int) -> list[dict[str, Any]]:
    """``n`` source videos in ``project/media`` from the demo's raw videos; rows of the source list."""
    raw = sorted((ROOT / "data" / "demo" / "raw").glob("*.mp4"))
    if not raw:
        raise SystemExit("error: data/demo/raw is empty: build the demo first (dvc repro demo)")
    media = project / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        src = raw[i % len(raw)]
        target = media / f"syn{i:04d}.mp4"
        hd = hd_every > 0 and i % hd_every == hd_every - 1
        if not target.exists():
            with VideoWriter(target, fps=30.0, codec="libx264", crf=18, preset="veryfast") as out:
                for frame in iter_frames(src, 0, frames + 10):
                    rgb = frame.rgb
                    if hd:
                        import cv2

                        rgb = cv2.resize(rgb, (1280, 720), interpolation=cv2.INTER_LINEAR)
                    out.write(np.ascontiguousarray(rgb))
        rows.append({"video_id": f"syn{i:04d}", "url": f"file:media/syn{i:04d}.mp4", "start_frame": 5,
                     "end_frame": 5 + frames - 1})
    return rows


def write_sources(project: Path, rows: list[dict[str, Any]]) -> None:
    pd.DataFrame(rows).to_csv(project / "sources.csv", index=False)


def setup_project(project: Path, workers: int) -> dict[str, str]:
    for item in ("pipeline", "stages", "ldeq"):
        if not (project / item).exists():
            os.symlink(ROOT / item, project / item)
    (project / "corrections").mkdir(exist_ok=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["sources"]["list"] = "sources.csv"
    raw["sources"]["media"] = "media"
    raw["cluster"]["n_workers"] = workers
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {**os.environ, "PYTHONPATH": str(project), "WFLWV_CACHE": str(project / "cache")}


def run_stage(project: Path, env: dict[str, str], stage: str, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, f"stages.{stage}", *args], cwd=project, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"error: stage {stage} failed:\n{proc.stderr[-3000:]}")
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    summary = [line.split("INFO stages: ")[-1] for line in proc.stderr.splitlines() if "INFO stages: " in line]
    return {"seconds": round(seconds, 2), "client_peak_rss_mb": round(int(peak[-1].split()[1]) / 1024, 1),
            "log": summary[-1] if summary else ""}


def frames_of(project: Path, manifest: str) -> int:
    return len(pd.read_parquet(project / "manifests" / f"{manifest}.parquet", columns=["frame"]))


def computed(project: Path, stage: str) -> list[str]:
    timings = pd.read_csv(project / "logs" / "timings" / f"{stage}.csv")
    return sorted(timings.loc[~timings.reused, "video_id"])


def build(project: Path, env: dict[str, str]) -> dict[str, Any]:
    out = {}
    for stage in STAGES:
        out[stage] = run_stage(project, env, stage)
        print(f"  {stage}: {out[stage]}", flush=True)
    frames = {"trim": frames_of(project, "faces"), "faces": frames_of(project, "faces"),
              "label": len(pd.read_parquet(project / "manifests" / "landmarks.parquet",
                                           columns=["video_id", "frame"]).drop_duplicates())}
    for stage, n in frames.items():
        out[stage]["frames"] = n
        out[stage]["frames_per_s"] = round(n / out[stage]["seconds"], 2)
    return out


def label_rss_slope(project: Path, env: dict[str, str], fraction: float) -> dict[str, Any]:
    """Client peak RSS of the label stage (empty cache, so every video computes) on a subset and on all videos."""
    ids = sorted(pd.read_parquet(project / "manifests" / "faces.parquet", columns=["video_id"]).video_id.unique())
    subset = ids[: max(1, round(len(ids) * fraction))]
    points = []
    for chosen in (subset, ids):
        part = project / "manifests" / "faces_part.parquet"
        with ManifestWriter(part, "faces") as writer:
            for vid, rows in iter_videos(project / "manifests" / "faces.parquet", "faces"):
                if vid in chosen:
                    writer.write(rows)
        cold = {**env, "WFLWV_CACHE": tempfile.mkdtemp(prefix="cold-cache-")}
        result = run_stage(project, cold, "label", "--faces", str(part), "--out", "manifests/landmarks_part.parquet",
                           "--status-out", "manifests/label_status_part.parquet")
        frames = len(pd.read_parquet(project / "manifests" / "landmarks_part.parquet",
                                     columns=["video_id", "frame"]).drop_duplicates())
        points.append({"videos": len(chosen), "frames": frames, **result})
        shutil.rmtree(cold["WFLWV_CACHE"])
    (a, b) = points
    slope = (b["client_peak_rss_mb"] - a["client_peak_rss_mb"]) * 1024 / max(1, b["frames"] - a["frames"])
    # a slope at or below zero is flat within noise: extrapolate it as zero growth, never as shrinking
    return {"points": points, "kb_per_frame": round(slope, 2),
            "extrapolated_mb": {k: round(b["client_peak_rss_mb"] + max(slope, 0.0) * (v - b["frames"]) / 1024, 1)
                                for k, v in TARGETS.items()}}


def add_one_video(project: Path, env: dict[str, str], rows: list[dict[str, Any]], frames: int, hd_every: int
                  ) -> dict[str, Any]:
    more = make_media(project, len(rows) + 1, frames, hd_every)
    write_sources(project, more)
    out = {}
    for stage in STAGES[:5]:
        result = run_stage(project, env, stage)
        out[stage] = {"seconds": result["seconds"], "computed": computed(project, stage) if stage != "sources" else
                      None, "log": result["log"]}
    return out


def kill_and_resume(project: Path, env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["label"]["models"] = [m for m in raw["label"]["models"] if m != "centerface_5"]  # every key changes
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    entries = Path(env["WFLWV_CACHE"]) / "label"
    known = set(entries.glob("??/*"))
    total = len(pd.read_parquet(project / "manifests" / "faces_status.parquet").query("status == 'ok'"))
    proc = subprocess.Popen([sys.executable, "-m", "stages.label"], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(set(entries.glob("??/*")) - known) < total // 2 and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(set(entries.glob("??/*")) - known)
    result = run_stage(project, env, "label")
    timings = pd.read_csv(project / "logs" / "timings" / "label.csv")
    return {"videos": total, "finished_before_kill": finished, "rerun_reused": int(timings.reused.sum()),
            "rerun_computed": int((~timings.reused).sum()), "rerun_seconds": result["seconds"], "log": result["log"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--hd-every", type=int, default=6, help="every n-th video at 1280x720 (0: none)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--rss-fraction", type=float, default=0.25)
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--demo-rss", action="store_true",
                        help="only the label client's RSS slope on this project's built demo (a quarter vs all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.demo_rss:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                  "demo_label_rss": label_rss_slope(ROOT, env, args.rss_fraction)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-"))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                              "videos": args.videos, "frames_per_video": args.frames, "hd_every": args.hd_every,
                              "runs": {}}
    for workers in args.workers:
        project = work / f"workers{workers}"
        project.mkdir(parents=True, exist_ok=True)
        env = setup_project(project, workers)
        rows = make_media(project, args.videos, args.frames, args.hd_every)
        write_sources(project, rows)
        print(f"{workers} worker(s): build", flush=True)
        run: dict[str, Any] = {"build": build(project, env)}
        if workers == max(args.workers):
            print("label client RSS slope", flush=True)
            run["label_rss"] = label_rss_slope(project, env, args.rss_fraction)
            print("one more video", flush=True)
            run["one_more_video"] = add_one_video(project, env, rows, args.frames, args.hd_every)
            print("kill -9 mid-label and resume", flush=True)
            run["kill_resume"] = kill_and_resume(project, env)
        result["runs"][str(workers)] = run
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
