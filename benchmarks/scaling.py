"""Scale-out of the per-frame stages: faces and label with 1 and with 2 dask workers on the demo clips, and the label
stage's per-frame cost split into decode, canvas conversion, each model, and the rest (its overhead).

Needs the trimmed demo clips (``manifests/clips.parquet`` after ``dvc repro``). Run it on a quiet machine: every
worker is one process with one thread, so the 2-worker run needs 2 idle cores to mean anything.

    python benchmarks/scaling.py --workers 1 2 --out benchmarks/results/scaling.json
    python benchmarks/scaling.py --n-clips 1 --workers 1   # smoke run
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

from pipeline.cluster import dask_client, worker_cached
from pipeline.faces.process import track_main_face
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.landmarks.label import _canvas, available_models, create_model, label_video
from pipeline.manifest import read_table
from pipeline.params import stage_params


def _faces(clip: dict[str, Any], params: Any) -> dict[str, Any]:
    return track_main_face(clip["video_id"], clip["path"], params, create_landmark_model)


def _label(item: dict[str, Any], models: list[str]) -> dict[str, Any]:
    return label_video(item["video_id"], item["path"], item["boxes"], models, item["valid"], item["rolls"])


def _timed(fn: Any, item: dict[str, Any], **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(item, **kwargs)
    return out, time.perf_counter() - t0


def _run_times(gathered: list[tuple[Any, float]], workers: int, seconds: float, frames: int) -> dict[str, Any]:
    """``tasks`` (the run's wall time), ``frames_per_s``, ``busy`` (sum of the tasks' own wall times: ``busy /
    (workers × tasks)`` is the share of the run the workers computed; the rest is scheduling, imbalance at the end,
    transfers) and each task's own seconds (``per_task``: compare across worker counts to see contention)."""
    per_task = [float(sec) for _, sec in gathered]
    busy = float(sum(per_task))
    return {"tasks": seconds, "frames_per_s": frames / seconds, "busy": busy,
            "worker_utilisation": busy / (workers * seconds), "per_task": per_task}


def timed_run(fn: Any, items: list[dict[str, Any]], workers: int, params_path: Path, frames: int, **kwargs: Any
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``fn`` over ``items`` (``frames`` in all) on a fresh LocalCluster of ``workers`` single-thread workers.

    Returns the results and :func:`_run_times` plus ``start`` (cluster up); the run's time goes from submitting to
    the last result, model loading in each worker included, as in a stage run.
    """
    cluster = stage_params("cluster", params_path, scheduler=None, n_workers=workers, threads_per_worker=1)
    t0 = time.perf_counter()
    with dask_client(cluster) as client:
        t1 = time.perf_counter()
        gathered = client.gather([client.submit(_timed, fn, item, pure=False, **kwargs) for item in items])
        t2 = time.perf_counter()
    return [r for r, _ in gathered], {"start": t1 - t0, **_run_times(gathered, workers, t2 - t1, frames)}


def plain_run(fn: Any, items: list[dict[str, Any]], workers: int, frames: int, **kwargs: Any) -> dict[str, Any]:
    """The same tasks on a pool of ``workers`` plain spawned processes (no dask; threads pinned and malloc tuned as
    on a dask worker): what this machine gives two processes at all, the ceiling for the dask runs."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from pipeline.cluster import pin_threads

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=pin_threads) as pool:
        t0 = time.perf_counter()
        gathered = list(pool.map(partial(_timed, fn, **kwargs), items))
        seconds = time.perf_counter() - t0
    return _run_times(gathered, workers, seconds, frames)


def _slowdown(one: dict[str, Any], two: dict[str, Any]) -> float:
    """Median over tasks of a task's time in run ``two`` ÷ its time in run ``one``."""
    return float(np.median(np.array(two["per_task"]) / np.array(one["per_task"])))


def label_inputs(clips: list[dict[str, Any]], faces_out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The label stage's per-video input (boxes, validity, roll per frame) from the faces results."""
    items = []
    for clip, res in zip(clips, faces_out):
        rows = sorted(res["rows"], key=lambda r: r["frame"])
        if res["status"]["status"] != "ok" or not rows:
            continue
        items.append({
            "video_id": clip["video_id"], "path": clip["path"],
            "boxes": np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in rows], np.float32),
            "valid": np.array([r["valid"] for r in rows], bool),
            "rolls": np.array([np.nan if r.get("roll") is None else r["roll"] for r in rows], np.float64)})
    return items


def label_breakdown(item: dict[str, Any], models: list[str], repeats: int = 1) -> dict[str, Any]:
    """Per labelled frame (ms): decode, canvas conversion, each model's predict, and the label stage's total; the
    overhead is total - (decode + canvas + models): scheme mapping, row building, bookkeeping."""
    import av

    adapters = {m: worker_cached(f"landmarks:{m}", lambda m=m: create_model(m)) for m in models}
    boxes, valid = item["boxes"], item["valid"]
    label_video(item["video_id"], item["path"], boxes, models, valid, item["rolls"])  # warm-up (caches, pages)
    decode, canvas_t, per_model = [], [], {m: [] for m in models}
    for _ in range(repeats):
        with av.open(str(item["path"])) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = container.decode(stream)
            index = 0
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                t1 = time.perf_counter()
                if frame is None:
                    break
                decode.append(t1 - t0)
                if index < len(boxes) and valid[index] and np.isfinite(boxes[index]).all():
                    roll = item["rolls"][index] if np.isfinite(item["rolls"][index]) else 0.0
                    t2 = time.perf_counter()
                    canvas, local, _ = _canvas(frame, boxes[index], roll)
                    canvas_t.append(time.perf_counter() - t2)
                    for m, adapter in adapters.items():
                        t3 = time.perf_counter()
                        adapter.predict(canvas, local)
                        per_model[m].append(time.perf_counter() - t3)
                index += 1
    totals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        label_video(item["video_id"], item["path"], boxes, models, valid, item["rolls"])
        totals.append(time.perf_counter() - t0)
    n_labelled = max(len(canvas_t) // repeats, 1)
    ms = {"decode": 1e3 * float(np.sum(decode)) / repeats / n_labelled,
          "canvas": 1e3 * float(np.mean(canvas_t)) if canvas_t else 0.0,
          "models": {m: 1e3 * float(np.mean(v)) if v else 0.0 for m, v in per_model.items()},
          "total": 1e3 * float(np.median(totals)) / n_labelled}
    parts = ms["decode"] + ms["canvas"] + sum(ms["models"].values())
    ms["overhead"] = ms["total"] - parts
    ms["overhead_share"] = ms["overhead"] / ms["total"] if ms["total"] else 0.0
    return {"video_id": item["video_id"], "frames_labelled": n_labelled, "ms_per_frame": ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--clips", type=Path, default=Path("manifests/clips.parquet"))
    parser.add_argument("--n-clips", type=int, default=None, help="first N ok clips (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="passes of the per-frame breakdown")
    parser.add_argument("--stages", nargs="+", choices=("faces", "label"), default=["faces", "label"])
    parser.add_argument("--plain", action="store_true",
                        help="also run the faces tasks on 1 and 2 plain processes (no dask): the machine's ceiling")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the label per-frame breakdown")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    clips = [c for c in read_table(args.clips, "clips").to_pylist() if c["status"] == "ok"][: args.n_clips]
    if not clips:
        print(f"error: {args.clips}: no ok clip", file=sys.stderr)
        return 2
    frames = int(sum(c["n_frames"] for c in clips))
    faces_params = stage_params("faces", args.params)
    models, missing = available_models(stage_params("label", args.params).models)
    result: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(),
                                          "python": platform.python_version()},
                              "clips": len(clips), "frames": frames, "models": models, "missing_models": missing,
                              "runs": {}}
    label_items: list[dict[str, Any]] = []
    for workers in args.workers:
        faces_out, faces_t = timed_run(_faces, clips, workers, args.params, frames, params=faces_params)
        run = {"faces": faces_t}
        if "label" in args.stages:
            if not label_items:  # the label input is the faces output (identical for any worker count)
                label_items = label_inputs(clips, faces_out)
            label_frames = int(sum(len(i["boxes"]) for i in label_items))
            _, run["label"] = timed_run(_label, label_items, workers, args.params, label_frames, models=models)
        result["runs"][str(workers)] = run
        print(f"{workers} worker(s): " + ", ".join(f"{s} {t['frames_per_s']:.1f} frames/s" for s, t in run.items())
              + f" (cluster start {faces_t['start']:.1f} s)", flush=True)
    if "1" in result["runs"] and "2" in result["runs"]:
        one, two = result["runs"]["1"], result["runs"]["2"]
        result["speedup_2_vs_1"] = {s: two[s]["frames_per_s"] / one[s]["frames_per_s"] for s in args.stages}
        print("2 vs 1 worker throughput: " + ", ".join(f"{s} x{v:.2f}" for s, v in result["speedup_2_vs_1"].items()))
        for stage in args.stages:
            two[stage]["task_slowdown_vs_1"] = _slowdown(one[stage], two[stage])
            print(f"{stage}: 2 workers busy {two[stage]['worker_utilisation']:.0%} of the run; "
                  f"each task took x{two[stage]['task_slowdown_vs_1']:.2f} its 1-worker time (median)")
    if args.plain:
        plain = {str(w): plain_run(_faces, clips, w, frames, params=faces_params) for w in args.workers}
        for w, times in plain.items():
            print(f"faces on {w} plain process(es), no dask: {times['frames_per_s']:.1f} frames/s", flush=True)
        result["plain_processes"] = {"faces": plain}
        if "1" in plain and "2" in plain:
            ratio = plain["2"]["frames_per_s"] / plain["1"]["frames_per_s"]
            result["plain_processes"]["faces_speedup_2_vs_1"] = ratio
            print(f"faces, plain processes: 2 vs 1 x{ratio:.2f}; each task took "
                  f"x{_slowdown(plain['1'], plain['2']):.2f} its 1-process time (median)")
    if label_items and not args.no_breakdown:
        breakdown = label_breakdown(label_items[0], models, args.repeats)
        result["label_breakdown"] = breakdown
        ms = breakdown["ms_per_frame"]
        print(f"label per frame ({breakdown['video_id']}): total {ms['total']:.1f} ms = decode {ms['decode']:.1f} + "
              f"canvas {ms['canvas']:.1f} + models " + " + ".join(f"{m} {v:.1f}" for m, v in ms["models"].items())
              + f" + overhead {ms['overhead']:.1f} ({ms['overhead_share']:.0%})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
