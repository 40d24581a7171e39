"""Per-model landmark latency: ms per face for every registered landmark model on the astronaut.

Each model runs ``predict`` (the call the label stage makes, roll check included) on ``skimage.data.astronaut()``
with dlib HOG's box, after one warm-up call; the figure is the median of ``--repeats`` calls. Models whose files are
missing are listed with the reason. The error against dlib-68 (NME: mean distance over the WFLW-98 points both
define, / outer-eye-corner distance) is recorded alongside, as a sanity check of each adapter.

It also times the Peppa slim_160 ONNX graph as published (every weight also listed as a graph input, so onnxruntime
cannot fold its batch norms) against the graph the adapter loads (those inputs removed in memory), on the same input,
and records the largest output difference.

    python benchmarks/landmark_models.py --repeats 30 --out benchmarks/results/landmark_models.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np
import torch

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box, as in the tests


def peppa_graph(rgb: np.ndarray, repeats: int) -> dict[str, object]:
    """ms per call of the published Peppa graph and of the constant-folding one, and their largest difference."""
    import onnxruntime as ort

    from pipeline.landmarks.adapters import constant_folding_session
    from pipeline.models_store import model_path

    path = model_path("peppa_slim_160")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sessions = {"published": ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                "weights_not_inputs": constant_folding_session(path)}
    crop = rgb[60:220, 140:300, ::-1].astype(np.float32)  # the astronaut's face, BGR, 160×160
    blob = np.ascontiguousarray(((crop - 127) / 127).transpose(2, 0, 1))[None]
    out: dict[str, object] = {}
    outputs = []
    for name, session in sessions.items():
        feed = {session.get_inputs()[0].name: blob}
        outputs.append(session.run(None, feed)[0])
        seconds = []
        for _ in range(max(repeats, 100)):
            start = time.perf_counter()
            session.run(None, feed)
            seconds.append(time.perf_counter() - start)
        out[f"ms_median_{name}"] = round(1000 * float(np.median(seconds)), 3)
    out["max_abs_output_difference"] = float(np.abs(outputs[0] - outputs[1]).max())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (dask workers run one thread each)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from skimage import data

    from ldeq.wflw import interocular
    from pipeline.landmarks.adapters import LANDMARK_MODELS, create_landmark_model
    from pipeline.landmarks.schemes import to_wflw98
    from pipeline.manifest import write_json
    from pipeline.models_store import ModelUnavailable

    torch.set_num_threads(args.threads)
    rgb = data.astronaut()
    reference: np.ndarray | None = None
    results: dict[str, dict[str, object]] = {}
    for name in sorted(LANDMARK_MODELS, key=lambda n: n != "dlib_68"):  # dlib first: it is the NME reference
        try:
            model = create_landmark_model(name)
        except (ModelUnavailable, ImportError) as err:
            results[name] = {"unavailable": str(err)}
            print(f"{name:20s} unavailable: {err}")
            continue
        points, _ = model.predict(rgb, ASTRONAUT_BOX)  # warm-up: first calls pay for allocation and caches
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.predict(rgb, ASTRONAUT_BOX)
            seconds.append(time.perf_counter() - start)
        row: dict[str, object] = {
            "family": model.family, "scheme": model.scheme, "version": model.version, "n_points": len(points),
            "ms_median": round(1000 * float(np.median(seconds)), 2), "ms_min": round(1000 * min(seconds), 2),
        }
        try:
            wflw, _ = to_wflw98(points, model.scheme)
        except KeyError:  # a scheme without a map to WFLW-98 gets no NME
            wflw = None
        if name == "dlib_68":
            reference = wflw
        if wflw is not None and reference is not None:
            scale = float(interocular(reference))
            row["nme_vs_dlib68"] = round(float(np.nanmean(np.linalg.norm(wflw - reference, axis=1))) / scale, 4)
        results[name] = row
        print(f"{name:20s} {row['ms_median']:8.2f} ms/face  (min {row['ms_min']:.2f})  "
              f"NME vs dlib {row.get('nme_vs_dlib68', '-')}")
    payload = {
        "image": "skimage.data.astronaut", "box": ASTRONAUT_BOX.tolist(), "repeats": args.repeats,
        "torch_threads": args.threads, "machine": f"{platform.machine()}, {platform.python_version()}, cpu",
        "models": results,
    }
    if "ms_median" in results.get("peppa_slim_160", {}):
        payload["peppa_graph"] = peppa_graph(rgb, args.repeats)
        print("peppa_slim_160 graph:", payload["peppa_graph"])
    if args.out:
        write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
