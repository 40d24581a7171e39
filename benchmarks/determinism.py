"""CPU-independent model kernels (``models.determinism: exact``) against the runtimes' own (``fast``): ms per face
before and after each switch, how far the outputs move, and the invariances one CPU can show.

    python benchmarks/determinism.py [--repeats 3] [--out benchmarks/results/determinism.json]

For every model that computes a stored value: detectors (RetinaFace, CenterFace through cv2.dnn instead of
onnxruntime; BlazeFace through LiteRT's reference kernels instead of XNNPACK) on real photos (scikit-image's astronaut,
insightface's ``t1.jpg``), landmark models on the faces found there (MediaPipe's mesh through the reference kernels,
Peppa through cv2.dnn; dlib and face-api run the same code both ways and give the stage totals their share). Then:

- *repeat*: the exact path twice in one process gives the same bits; *threads*: cv2.dnn at 1 and 2 threads and LiteRT's
  reference kernels at 1 and 2 threads give the same bits;
- *cv2.dnn with AVX-512 on and off*: RetinaFace's raw outputs in a child process with OpenCV's AVX-512 dispatch left on
  and in one pinned to AVX2 (on a CPU that has AVX-512): the same bits means cv2.dnn's kernels for this graph do not
  change between the two levels at all;
- *MKL_CBWR*: a float32 GEMM through torch (MKL) under ``COMPATIBLE`` and ``SSE2``, ``AVX2`` and ``AUTO`` (capped at
  AVX2), and ``COMPATIBLE`` at 1 and 2 threads; the settings that name the same path give the same bits;
- *LDEQ*: one training step of the demo profile with oneDNN (the old default) and with the exact kernels.

Stage totals are sums of model time per face (decoding, tracking and consensus excluded): the faces stage runs the
detector per frame and the mesh follower per face, the label stage every label model per face.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stages  # noqa: E402,F401,I001  (the SIMD pins, before numpy loads)
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from pipeline.kernels import DETERMINISM_ENV, kernel_level  # noqa: E402

DETECTORS = ("retinaface", "centerface", "blazeface_full")
LANDMARKS = ("mediapipe_mesh_v2", "peppa_slim_160", "dlib_68", "faceapi_68")
LABEL_STAGE = ("dlib_68", "mediapipe_mesh_v2", "faceapi_68", "peppa_slim_160", "retinaface", "centerface")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """``fn()``'s last result and its median wall time in ms over ``repeats`` calls (after one warm-up)."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, 1000 * float(np.median(times))


def in_mode(mode: str) -> None:
    os.environ[DETERMINISM_ENV] = mode


def photos() -> dict[str, np.ndarray]:
    from pipeline.demo.media import source_photos

    return source_photos()


def detector_runs(frames: dict[str, np.ndarray], repeats: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from pipeline.faces.detectors.registry import create_detector

    results: dict[str, Any] = {}
    boxes: dict[str, np.ndarray] = {}
    for name in DETECTORS:
        per_mode: dict[str, Any] = {}
        outputs: dict[str, list[Any]] = {}
        for mode in ("fast", "exact"):
            in_mode(mode)
            detector = create_detector(name, max_side=640)
            ms, found, outs = 0.0, 0, []
            for frame in frames.values():
                dets, t = timed(lambda f=frame, d=detector: d.detect(f), repeats)
                ms, found = ms + t, found + len(dets.boxes)
                outs.append(dets)
            per_mode[mode] = {"ms_per_frame": ms / len(frames), "faces": found,
                              "ms_per_face": ms / max(found, 1)}
            outputs[mode] = outs
            if mode == "exact":
                again = [detector.detect(f) for f in frames.values()]
                per_mode["exact_repeat_identical"] = all(
                    np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
                    for a, b in zip(outs, again))
        diffs = []
        for fast, exact in zip(outputs["fast"], outputs["exact"]):
            if len(fast.boxes) != len(exact.boxes):
                diffs.append(float("inf"))
            elif len(fast.boxes):
                diffs.append(float(np.abs(fast.boxes - exact.boxes).max()))
        per_mode["faces_equal"] = per_mode["fast"]["faces"] == per_mode["exact"]["faces"]
        per_mode["max_box_difference_px"] = max(diffs, default=0.0)
        per_mode["cost"] = per_mode["exact"]["ms_per_face"] / per_mode["fast"]["ms_per_face"]
        results[name] = per_mode
        if name == "retinaface":
            boxes = {k: d.boxes for k, d in zip(frames, outputs["fast"])}
    return results, boxes


def landmark_runs(frames: dict[str, np.ndarray], boxes: dict[str, np.ndarray], repeats: int) -> dict[str, Any]:
    from pipeline.landmarks.adapters import create_landmark_model

    faces = [(frames[k], b) for k, bs in boxes.items() for b in bs]
    results: dict[str, Any] = {}
    for name in LANDMARKS:
        per_mode: dict[str, Any] = {}
        points: dict[str, list[np.ndarray]] = {}
        for mode in ("fast", "exact"):
            in_mode(mode)
            model = create_landmark_model(name)
            ms, pts = 0.0, []
            for rgb, box in faces:
                (p, _), t = timed(lambda r=rgb, b=box, m=model: m.predict(r, b), repeats)
                ms += t
                pts.append(p)
            per_mode[mode] = {"ms_per_face": ms / len(faces)}
            points[mode] = pts
            if mode == "exact":
                again = [model.predict(rgb, box)[0] for rgb, box in faces]
                per_mode["exact_repeat_identical"] = all(np.array_equal(a, b) for a, b in zip(pts, again))
        per_mode["faces"] = len(faces)
        per_mode["max_point_difference_px"] = float(max(np.abs(a - b).max() for a, b in zip(*points.values())))
        per_mode["cost"] = per_mode["exact"]["ms_per_face"] / per_mode["fast"]["ms_per_face"]
        results[name] = per_mode
    return results


def thread_invariance(frames: dict[str, np.ndarray]) -> dict[str, bool]:
    """cv2.dnn (RetinaFace) and LiteRT's reference kernels (the mesh's model) at 1 and 2 threads: the same bits?"""
    import cv2

    from pipeline.faces.detectors.registry import create_detector
    from pipeline.kernels import litert_interpreter
    from pipeline.models_store import model_path

    in_mode("exact")
    frame = frames["t1"]
    detector = create_detector("retinaface", max_side=640)
    outs = []
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        outs.append(detector.detect(frame))
    cv2.setNumThreads(1)
    x = np.random.default_rng(0).random((1, 192, 192, 3), dtype=np.float32)
    tensors = []
    for threads in (1, 2):
        interp = litert_interpreter(model_path("mediapipe_face_mesh_v2"), threads)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        tensors.append([interp.get_tensor(o["index"]).copy() for o in interp.get_output_details()])
    return {"cv2_dnn_retinaface_1_vs_2_threads": bool(np.array_equal(outs[0].boxes, outs[1].boxes)
                                                     and np.array_equal(outs[0].keypoints5, outs[1].keypoints5)),
            "litert_reference_mesh_1_vs_2_threads": all(np.array_equal(a, b) for a, b in zip(*tensors))}


_RAW_RETINAFACE = """
import sys, json, hashlib
sys.path.insert(0, sys.argv[1])
import numpy as np, cv2
from pipeline.demo.media import source_photos
from pipeline.faces.detectors.base import downscale
from pipeline.faces.detectors.retinaface import RetinaFaceDetector
cv2.setNumThreads(1)
det = RetinaFaceDetector(max_side=640)
image, _ = downscale(source_photos()["t1"], 640)
h, w = image.shape[:2]
blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
blob[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1) - np.array([104.0, 117.0, 123.0], np.float32)[:, None, None]
outs = det._session.run(None, {"input": blob})
print(json.dumps({"md5": hashlib.md5(b"".join(np.ascontiguousarray(o).tobytes() for o in outs)).hexdigest(),
                  "cv": cv2.getCPUFeaturesLine(), "loc": np.asarray(outs[0]).ravel()[:2000].tolist()}))
"""


def cv2_dnn_avx512_on_and_off() -> dict[str, Any]:
    """RetinaFace's raw cv2.dnn outputs pinned and with OpenCV's AVX-512 dispatch left on, in two child processes."""
    from pipeline.kernels import effective_env, kernel_env

    pins = effective_env({}, kernel_env())
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("NPY_", "OPENCV_", "ATEN_", "MKL_", "ONEDNN_"))}
    base = {**bare, **{k: v for k, v in pins.items() if k != "OPENCV_CPU_DISABLE"}, DETERMINISM_ENV: "exact"}
    runs = {}
    for name, env in (("pinned", {**base, **pins}), ("opencv_native", base)):
        done = subprocess.run([sys.executable, "-c", _RAW_RETINAFACE, str(ROOT)], env=env, capture_output=True,
                              text=True, timeout=300, check=True)
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    loc = [np.array(runs[k]["loc"]) for k in ("pinned", "opencv_native")]
    return {"cpu_lines": {k: v["cv"] for k, v in runs.items()},
            "outputs_identical": runs["pinned"]["md5"] == runs["opencv_native"]["md5"],
            "max_loc_difference": float(np.abs(loc[0] - loc[1]).max())}


_FACES_STAGE = """
import sys, json, time
sys.path.insert(0, sys.argv[1])
import stages
import cv2, numpy as np
from pipeline.faces.process import track_main_face
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.params import PROJECT_PARAMS, stage_params
cv2.setNumThreads(int(sys.argv[2]))
params = stage_params("faces", PROJECT_PARAMS)
out = {}
for path in sys.argv[3:]:
    started = time.perf_counter()
    result = track_main_face(path, path, params, create_landmark_model)
    seconds = time.perf_counter() - started
    rows = result["rows"]
    out[path] = {"seconds": seconds, "frames": len(rows), "status": result["status"]["status"],
                 "sources": sorted({r["source"] for r in rows}),
                 "boxes": [[r[k] for k in ("x1", "y1", "x2", "y2")] for r in rows]}
print(json.dumps(out))
"""


def faces_stage(clips: list[Path]) -> dict[str, Any]:
    """The faces stage's per-clip work (detect, track, follow, smooth) on demo clips, fast and exact (and exact at 2
    OpenCV threads), each in a child process: ms per frame and how far the boxes move."""
    runs = {}
    for label, mode, threads in (("fast", "fast", 1), ("exact", "exact", 1), ("exact_2_threads", "exact", 2)):
        env = {**os.environ, DETERMINISM_ENV: mode}
        done = subprocess.run([sys.executable, "-c", _FACES_STAGE, str(ROOT), str(threads), *map(str, clips)],
                              env=env, capture_output=True, text=True, timeout=1200, check=True)
        runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {"clips": [c.name for c in clips]}
    for label, per_clip in runs.items():
        frames = sum(c["frames"] for c in per_clip.values())
        out[label] = {"ms_per_frame": 1000 * sum(c["seconds"] for c in per_clip.values()) / max(frames, 1),
                      "statuses": [c["status"] for c in per_clip.values()]}
    out["cost"] = out["exact"]["ms_per_frame"] / out["fast"]["ms_per_frame"]
    diffs = []
    for clip in runs["fast"]:
        fast, exact = (np.array(runs[m][clip]["boxes"], float) for m in ("fast", "exact"))
        if fast.shape != exact.shape:
            diffs.append(float("inf"))
        elif fast.size and not np.isnan(fast - exact).all():
            diffs.append(float(np.nanmax(np.abs(fast - exact))))
    out["max_box_difference_fast_vs_exact_px"] = max(diffs, default=0.0)
    out["exact_1_vs_2_threads_identical"] = all(runs["exact"][c]["boxes"] == runs["exact_2_threads"][c]["boxes"]
                                                for c in runs["exact"])
    return out


_GEMM = """
import sys, hashlib, torch
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
a, b = torch.randn(512, 777, generator=g), torch.randn(777, 300, generator=g)
print(hashlib.md5((a @ b).numpy().tobytes()).hexdigest())
"""


def mkl_cbwr_paths() -> dict[str, Any]:
    """A torch GEMM's result digest under several MKL_CBWR settings (and thread counts) in child processes."""
    bare = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    digests = {}
    for label, cbwr, threads in (("COMPATIBLE", "COMPATIBLE", 1), ("COMPATIBLE_2_threads", "COMPATIBLE", 2),
                                 ("SSE2", "SSE2", 1), ("AVX2", "AVX2", 1), ("AUTO", "AUTO", 1),
                                 ("unset", None, 1)):
        env = {**bare, **({"MKL_CBWR": cbwr} if cbwr else {})}
        done = subprocess.run([sys.executable, "-c", _GEMM, str(threads)], env=env, capture_output=True, text=True,
                              timeout=120, check=True)
        digests[label] = done.stdout.strip()
    return {"digests": digests, "compatible_same_at_1_and_2_threads":
            digests["COMPATIBLE"] == digests["COMPATIBLE_2_threads"],
            "avx2_same_as_auto_capped_at_avx2": digests["AVX2"] == digests["AUTO"]}


def ldeq_step(repeats: int) -> dict[str, float]:
    """ms per training step of the demo profile (batch 16): oneDNN (``fast``) and the exact kernels, one thread."""
    import torch

    from ldeq.config import get_config
    from ldeq.infer import exact_cpu_kernels
    from ldeq.model import LDEQ
    from ldeq.train import heatmap_loss, landmark_loss

    cfg = get_config("demo")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, 3, cfg.input_size, cfg.input_size, generator=g)
    y = torch.rand(cfg.batch_size, 98, 2, generator=g)
    torch.manual_seed(0)
    model = LDEQ(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        out = model(x)
        loss = landmark_loss(out.landmarks, y) + heatmap_loss(out.z, y)
        optim.zero_grad()
        loss.backward()
        optim.step()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _, onednn = timed(step, repeats)
    torch.set_num_threads(threads)
    with exact_cpu_kernels():
        _, exact = timed(step, repeats)
    return {"onednn_1_thread_ms": onednn, "exact_ms": exact, "cost": exact / onednn}


def model_parts(repeats: int, clips: list[Path]) -> dict[str, Any]:
    """Every model fast and exact, the stage totals, the invariances, an LDEQ training step and the faces stage."""
    frames = photos()
    detectors, boxes = detector_runs(frames, repeats)
    landmarks = landmark_runs(frames, boxes, repeats)
    per_face = {m: {mode: (landmarks.get(m) or detectors[m])[mode]["ms_per_face"] for mode in ("fast", "exact")}
                for m in LABEL_STAGE}
    label = {mode: sum(v[mode] for v in per_face.values()) for mode in ("fast", "exact")}
    faces = {mode: detectors["retinaface"][mode]["ms_per_face"] + landmarks["mediapipe_mesh_v2"][mode]["ms_per_face"]
             for mode in ("fast", "exact")}
    results = {
        "detectors": detectors, "landmarks": landmarks,
        "stage_model_ms_per_face": {"faces": {**faces, "cost": faces["exact"] / faces["fast"]},
                                    "label": {**label, "cost": label["exact"] / label["fast"]}},
        "invariance": {**thread_invariance(frames), "cv2_dnn_avx512_on_and_off": cv2_dnn_avx512_on_and_off(),
                       "mkl_cbwr": mkl_cbwr_paths()},
        "ldeq_train_step": ldeq_step(repeats),
    }
    if clips:
        results["faces_stage"] = faces_stage(clips)
    else:
        print("no demo clips found: the faces stage part is left out (build them with `dvc repro trim`)",
              file=sys.stderr)
    return results


def torch_inference(repeats: int) -> dict[str, Any]:
    """ms per call of torch models at batch 1: an LDEQ frame (demo profile, as the evaluate stage runs it) and
    face-api-68 on the astronaut's face (as the label stage runs it, oneDNN), each also under the exact kernels."""
    import torch
    from skimage import data

    from ldeq.config import get_config
    from ldeq.infer import exact_cpu_kernels
    from ldeq.model import LDEQ
    from pipeline.landmarks.adapters import create_landmark_model

    cfg = get_config("demo")
    torch.manual_seed(0)
    model = LDEQ(cfg).eval()
    x = torch.randn(1, 3, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    faceapi = create_landmark_model("faceapi_68")
    image, box = data.astronaut(), np.array([170, 40, 290, 190], np.float32)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for label, context in (("onednn", None), ("exact", exact_cpu_kernels)):
            if context is None:
                ldeq, ldeq_ms = timed(lambda: model(x).landmarks.numpy(), repeats)
                points, faceapi_ms = timed(lambda: faceapi.predict(image, box)[0], repeats)
            else:
                with context():
                    ldeq, ldeq_ms = timed(lambda: model(x).landmarks.numpy(), repeats)
                    points, faceapi_ms = timed(lambda: faceapi.predict(image, box)[0], repeats)
            out[label] = {"ldeq_frame_ms": ldeq_ms, "faceapi_68_ms": faceapi_ms, "ldeq": ldeq, "points": points}
    return {"ldeq_frame_ms": {k: out[k]["ldeq_frame_ms"] for k in out},
            "ldeq_cost": out["exact"]["ldeq_frame_ms"] / out["onednn"]["ldeq_frame_ms"],
            "ldeq_max_difference": float(np.abs(out["exact"]["ldeq"] - out["onednn"]["ldeq"]).max()),
            "faceapi_68_ms": {k: out[k]["faceapi_68_ms"] for k in out},
            "faceapi_68_cost": out["exact"]["faceapi_68_ms"] / out["onednn"]["faceapi_68_ms"],
            "faceapi_68_max_difference_px": float(np.abs(out["exact"]["points"] - out["onednn"]["points"]).max())}


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    avx512 = any(line.startswith("flags") and " avx512f" in line for line in lines)
    return f"{name or platform.machine()} ({'with' if avx512 else 'without'} AVX-512)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "determinism.json")
    parser.add_argument("--clips", type=Path, nargs="*", default=[
        ROOT / "data" / "clips" / f"{name}.mp4" for name in ("demo003_t1face4_d3", "demo009_carphone_d1",
                                                             "demo024_astronaut_d0_rolled", "demo026_t1face0_d1_exit")],
        help="demo clips for the faces stage's per-clip work (default: four of data/clips, built by `dvc repro trim`)")
    parser.add_argument("--parts", nargs="*", choices=["models", "torch"], default=["models", "torch"],
                        help="what to measure (models: every model, stages, invariances; torch: LDEQ and face-api "
                             "at batch 1); parts not measured are kept from --out")
    args = parser.parse_args()
    import cv2
    import torch

    cv2.setNumThreads(1)  # as on the workers (pipeline.cluster.pin_threads)
    torch.set_num_threads(1)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"cpu": _cpu_name(), "python": platform.python_version(), "cores": os.cpu_count()}
    results["kernel_level"] = kernel_level()
    if "models" in args.parts:
        results.update(model_parts(args.repeats, [c for c in args.clips if c.is_file()]))
    if "torch" in args.parts:
        results["torch_batch1"] = torch_inference(args.repeats)
    from pipeline.manifest import write_json

    write_json(args.out, results)
    print(json.dumps({k: results.get(k) for k in ("stage_model_ms_per_face", "faces_stage", "invariance",
                                                  "ldeq_train_step", "torch_batch1")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
