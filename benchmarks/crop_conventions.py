"""Measure each landmark model's crop convention on the demo; write ``pipeline/landmarks/conventions.json``.

A landmark model is trained on crops cut by one rule from one kind of box, its *reference box*; fed a box of another
convention it starts from the wrong place (a cascaded regressor places its mean shape in the box). Per model:

* ``from_track``: the faces stage's tracked box → the model's reference box, fitted where both exist;
* ``from_points``: the bounding box of the model's own landmarks (upright along their eye line) → its reference box,
  for the second pass (the relation a landmark tracker uses from frame to frame).

Reference boxes: dlib ERT-68 — its HOG detector's box (``dlib_hog``, the box it was trained on); face-api's 68 CNN —
the same HOG box (its 1.3 crop scale was calibrated on HOG boxes; its own detectors are not ported); MediaPipe mesh —
the short-range BlazeFace box (MediaPipe's detection→ROI rule, 1.5 × the long side; from landmarks: their bounding
box, the same rule — documented, so ``from_points`` is the identity); Peppa slim_160 — its landmarks' bounding box
(its training rule, so ``from_points`` is the identity, and ``from_track`` is fitted against the box its own
landmarks converge to: three passes, each from the previous one's landmarks).

Fitted on the fit half of the demo (identities astronaut, t1face1, t1face3, t1face5), on the label stage's own canvas
(the faces stage's boxes and rolls, ``pipeline.landmarks.label``) *and on its mirror image*: a convention is a
property of a model and a detector, which must hold for a face turned either way. The horizontal offset of a
landmarks→box relation is a line through the origin in the face's yaw (``BoxMap.dx_yaw``, least squares over the
pairs and their mirrors — the mirrors make the intercept exactly 0); the other parameters are medians (robust to
detector misses). The held-out half is measured too, to show the relation carries over. (Fitted on one side only, the
old constant offsets, dlib −0.11, said which way the fitting faces looked, and pushed the box of every face turned
the other way to the wrong side: benchmarks/README.md, self-checks.)

    python benchmarks/crop_conventions.py --out benchmarks/results/crop_conventions.json

``--peppa-input`` instead checks Peppa's input conventions (channel order, scaling, crop) on the seven demo stills:
NME against the stills' reference landmarks and against dlib-68 run from its own HOG box (another family).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np
import pandas as pd

from pipeline.faces.detectors import create_detector
from pipeline.faces.detectors.base import iou_matrix
from pipeline.landmarks.adapters import CONVENTIONS_FILE, BoxMap, LandmarkModel, create_landmark_model
from pipeline.landmarks.label import _canvas
from pipeline.manifest import read_table, rows_by_video, write_json

ROOT = Path(__file__).resolve().parent.parent
FIT_IDS = ("astronaut", "t1face1", "t1face3", "t1face5")
MIN_IOU = 0.3
#: model → (reference box, which relation is documented rather than fitted)
REFERENCES = {
    "dlib_68": "dlib HOG detector box",
    "faceapi_68": "dlib HOG detector box (its crop scale 1.3 was calibrated on HOG boxes)",
    "mediapipe_mesh_v2": "BlazeFace short-range box (MediaPipe detection→ROI; from landmarks: their bounding box)",
    "peppa_slim_160": "bounding box of its own 68 landmarks (its training crop rule)",
}
SAME_AS = {"mediapipe_mesh_v1": "mediapipe_mesh_v2", "faceapi_68_tiny": "faceapi_68"}
#: The crop mode the label stage uses per model, chosen on the demo with tracked boxes (benchmarks/label_quality.py,
#: all clips, levels 0-3; the demo truth and the agreement between independent families point the same way):
#: the second pass helps dlib (NME 5.33/5.95/4.72/9.67 → 5.19/5.92/4.81/8.39) and the mesh (4.88/5.49/4.00/7.14 →
#: 4.74/5.49/3.97/6.89); it does not help face-api (6.88/7.87/6.97/9.97 → 6.91/8.02/6.82/10.37) and hurts Peppa at
#: level 3 (11.49 → 13.34; agreement 10.59 → 12.26), whose first pass is already close to its own box.
LABEL_CROP = {"dlib_68": "refined", "mediapipe_mesh_v2": "refined", "faceapi_68": "measured",
              "peppa_slim_160": "measured"}


Pair = tuple[np.ndarray, np.ndarray, float]  # source box, target box, the face's yaw (0 where not known)


def _params(pairs: list[Pair]) -> np.ndarray:
    """(N, 4): the target box's centre offset in source widths/heights and its side ratios, per pair."""
    out = []
    for src, dst, _ in pairs:
        sw, sh = src[2] - src[0], src[3] - src[1]
        out.append([((dst[0] + dst[2]) - (src[0] + src[2])) / 2 / sw, ((dst[1] + dst[3]) - (src[1] + src[3])) / 2 / sh,
                    (dst[2] - dst[0]) / sw, (dst[3] - dst[1]) / sh])
    return np.asarray(out, np.float64).reshape(-1, 4)


def _fit(pairs: list[Pair]) -> dict[str, Any]:
    """Medians of dy, sw, sh; dx as ``dx_yaw × yaw`` through the origin where the pairs know the yaw (else the
    median, which mirrored pairs make 0); ``iqr`` of the residuals."""
    values = _params(pairs)
    yaw = np.array([p[2] for p in pairs], np.float64)
    med = np.median(values, axis=0)
    fitted = {"dx": 0.0, "dy": float(med[1]), "sw": float(med[2]), "sh": float(med[3]), "dx_yaw": 0.0}
    residual = values - med
    if np.any(yaw != 0):
        fitted["dx_yaw"] = float((yaw * values[:, 0]).sum() / (yaw**2).sum())
        residual[:, 0] = values[:, 0] - fitted["dx_yaw"] * yaw
    else:
        fitted["dx"] = float(med[0])
    q1, q3 = np.percentile(residual, [25, 75], axis=0)
    return {"map": {k: round(v, 4) + 0.0 for k, v in fitted.items()}, "n": int(len(values)),
            "iqr": [round(float(v), 4) for v in q3 - q1]}


def _best(found: Any, box: np.ndarray) -> np.ndarray | None:
    if not len(found):
        return None
    overlap = iou_matrix(box[None].astype(np.float64), found.boxes.astype(np.float64))[0]
    k = int(np.argmax(overlap))
    return found.boxes[k].astype(np.float64) if overlap[k] >= MIN_IOU else None


def _upright_bbox(model: LandmarkModel, points: np.ndarray) -> tuple[np.ndarray, float]:
    roll = model._roll(points)
    return model._box_from_points(points, roll).astype(np.float64), roll


def _mirror_box(box: np.ndarray, width: int) -> np.ndarray:
    return np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], np.float64)


def collect(step: int) -> dict[str, dict[str, list[Pair]]]:
    """Box pairs per (split, relation) over every ``step``-th valid frame of each demo clip with truth, on the
    label stage's canvas and on its mirror image."""
    import av

    truth = pd.read_parquet(ROOT / "data" / "demo" / "truth.parquet")
    media = truth.groupby("video_id").media.first()
    clips = {c["video_id"]: c["path"] for c in read_table(ROOT / "manifests" / "clips.parquet", "clips").to_pylist()}
    faces = rows_by_video(read_table(ROOT / "manifests" / "faces.parquet", "faces"))
    hog = create_detector("dlib_hog")
    blaze = create_detector("blazeface_short")
    dlib, faceapi, peppa = (create_landmark_model(n) for n in ("dlib_68", "faceapi_68", "peppa_slim_160"))
    pairs: dict[str, dict[str, list[Pair]]] = {"fit": {}, "held_out": {}}
    for vid, t in sorted(faces.items()):
        if vid not in media.index or not isinstance(media[vid], str):
            continue
        split = "fit" if media[vid] in FIT_IDS else "held_out"
        boxes = np.stack([t.column(k).to_numpy(zero_copy_only=False) for k in ("x1", "y1", "x2", "y2")], 1)
        valid = np.asarray(t.column("valid").to_numpy(zero_copy_only=False), bool)
        rolls = np.asarray(t.column("roll").to_numpy(zero_copy_only=False), np.float64)
        with av.open(str(ROOT / clips[vid])) as container:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index % step or not valid[index] or not np.isfinite(boxes[index]).all():
                    continue
                roll = rolls[index] if np.isfinite(rolls[index]) else 0.0
                upright, upright_local, _ = _canvas(frame, boxes[index], roll)
                mine = pairs[split]
                for canvas, track in ((upright, upright_local.astype(np.float64)),
                                      (np.ascontiguousarray(upright[:, ::-1]),
                                       _mirror_box(upright_local, upright.shape[1]))):
                    box = _best(hog.detect(canvas), track)
                    if box is not None:
                        mine.setdefault("hog/track", []).append((track, box, 0.0))
                        for name, model in (("dlib_68", dlib), ("faceapi_68", faceapi)):
                            points, _ = model._predict(canvas, box.astype(np.float32))
                            bbox, tilt = _upright_bbox(model, points)
                            if abs(tilt) < 10:  # HOG's box is axis-aligned: compare where the face is upright
                                mine.setdefault(f"{name}/points", []).append((bbox, box, model.yaw(points)))
                    box = _best(blaze.detect(canvas), track)
                    if box is not None:
                        mine.setdefault("blazeface/track", []).append((track, box, 0.0))
                    points, _ = peppa._predict(canvas, track.astype(np.float32))
                    for _ in range(3):  # converge on the box its own landmarks give (its training rule)
                        bbox, tilt = _upright_bbox(peppa, points)
                        points, _ = peppa._predict_rolled(canvas, bbox.astype(np.float32), tilt)
                    mine.setdefault("peppa_68/track", []).append((track, _upright_bbox(peppa, points)[0], 0.0))
        print(vid, split, {k: len(v) for k, v in pairs[split].items()}, flush=True)
    return pairs


def peppa_input() -> dict[str, Any]:
    """Peppa's NME per still for each input variant, against the reference and against dlib on its HOG box."""
    import cv2

    from ldeq.wflw import WFLW_TO_IBUG68, interocular
    from pipeline.demo.reference import load
    from pipeline.landmarks.adapters import PeppaSlim160

    peppa, dlib, hog = PeppaSlim160(), create_landmark_model("dlib_68"), create_detector("dlib_hog")
    variants = {"BGR, (x-127)/127, 1.4x1.6": (True, 127.0, 127.0, (1.4, 1.6)),
                "RGB, (x-127)/127, 1.4x1.6": (False, 127.0, 127.0, (1.4, 1.6)),
                "BGR, x/255, 1.4x1.6": (True, 0.0, 255.0, (1.4, 1.6)),
                "BGR, (x-127)/127, 1.4x1.4": (True, 127.0, 127.0, (1.4, 1.4)),
                "BGR, (x-127)/127, 1.6x1.8": (True, 127.0, 127.0, (1.6, 1.8))}
    out: dict[str, Any] = {}
    for name, (still, reference) in load().items():
        ref68 = reference[WFLW_TO_IBUG68]
        iod = float(interocular(reference))
        own = _best(hog.detect(still.rgb), np.asarray(still.box, np.float64))
        other = dlib.predict(still.rgb, own.astype(np.float32))[0] if own is not None else None
        (x1, y1), (x2, y2) = ref68.min(axis=0), ref68.max(axis=0)
        row = {}
        for label, (bgr, shift, scale, (sw, sh)) in variants.items():
            w, h = int(sw * (x2 - x1)), int(sh * (y2 - y1))
            left, top = (x1 + x2) / 2 - w / 2, (y1 + y2) / 2 - h / 2
            crop = cv2.warpAffine(still.rgb, np.array([[1.0, 0, -left], [0, 1.0, -top]]), (w, h),
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
            crop = cv2.resize(crop, (160, 160), interpolation=cv2.INTER_AREA if max(w, h) > 160 else cv2.INTER_LINEAR)
            blob = ((crop[:, :, ::-1] if bgr else crop).astype(np.float32) - shift) / scale
            raw = peppa._session.run(None, {peppa._input: np.ascontiguousarray(blob.transpose(2, 0, 1))[None]})[0]
            points = np.asarray(raw, np.float64).reshape(-1)[:136].reshape(68, 2) * [w, h] + [left, top]
            row[label] = {"vs_reference": round(100 * float(np.linalg.norm(points - ref68, axis=1).mean()) / iod, 2),
                          "vs_dlib": None if other is None else
                          round(100 * float(np.linalg.norm(points - other, axis=1).mean()) / iod, 2)}
        out[name] = row
        print(name, row, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=3, help="use every n-th frame of each clip")
    parser.add_argument("--out", type=Path, help="write the fits of both halves here (JSON)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite conventions.json")
    parser.add_argument("--from-fits", type=Path, help="take the fits from an earlier --out instead of measuring")
    parser.add_argument("--peppa-input", action="store_true", help="only check Peppa's input conventions")
    args = parser.parse_args()
    if args.peppa_input:
        result = peppa_input()
        if args.out:
            write_json(args.out, result)
        return 0
    if args.from_fits:
        fits = json.loads(args.from_fits.read_text(encoding="utf-8"))["fits"]
    else:
        pairs = collect(args.step)
        fits = {split: {key: _fit(p) for key, p in rel.items()} for split, rel in pairs.items()}
    fit = {key: entry["map"] for key, entry in fits["fit"].items()}
    identity = BoxMap().__dict__
    relations = {
        "dlib_68": (fit["hog/track"], fit["dlib_68/points"]),
        "faceapi_68": (fit["hog/track"], fit["faceapi_68/points"]),
        "mediapipe_mesh_v2": (fit["blazeface/track"], identity),
        "peppa_slim_160": (fit["peppa_68/track"], identity),
    }
    models = {name: {"reference": REFERENCES[name], "from_track": track, "from_points": points,
                     "label_crop": LABEL_CROP[name]} for name, (track, points) in relations.items()}
    models.update({alias: {**models[base], "reference": f"as {base}"} for alias, base in SAME_AS.items()})
    payload = {
        "models": models,
        "fits": fits,
        "provenance": "benchmarks/crop_conventions.py: medians over every "
                      f"{args.step}rd valid frame of the fit-half demo clips (identities {', '.join(FIT_IDS)}), on "
                      "the label stage's canvas with the faces stage's boxes; from_track: tracked box → reference "
                      "box where the reference detector fires (IoU ≥ 0.3); from_points: its own landmarks' upright "
                      "bounding box → reference box (dlib, face-api: HOG box, frames rolled < 10°; mesh, Peppa: "
                      "documented identity); every pair also on the mirror image. BoxMap: centre + "
                      "(dx + dx_yaw × yaw, dy) × source (w, h), sides × (sw, sh); yaw: LandmarkModel.yaw of the "
                      "model's own points.",
    }
    print(json.dumps(fits, indent=1))
    if not args.no_write:
        write_json(CONVENTIONS_FILE, payload)
    if args.out:
        write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
