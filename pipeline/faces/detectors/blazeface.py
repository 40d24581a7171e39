"""MediaPipe BlazeFace (short and full range) run through LiteRT, without the mediapipe package.

Pre- and post-processing follow MediaPipe 0.10.21's ``face_detection_{short,full}_range`` graphs: the frame is
letterboxed (aspect kept, zero padding) to the model's square input, scaled to [-1, 1]; raw outputs are decoded
against SSD anchors (``SsdAnchorsCalculator`` with fixed anchor size) and merged by WEIGHTED non-maximum suppression.
The interpreter runs LiteRT's reference kernels when ``models.determinism`` is exact (:mod:`pipeline.kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, empty, weighted_nms
from pipeline.models_store import model_path

__all__ = ["BlazeFaceDetector", "BlazeFaceShort", "BlazeFaceFull", "ssd_anchors"]


@dataclass(frozen=True)
class _Variant:
    model_key: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # 2 when interpolated_scale_aspect_ratio adds a second anchor, else 1
    min_score: float  # the graph's min_score_thresh


_SHORT = _Variant("blazeface_short", 128, (8, 16, 16, 16), 2, 0.5)
_FULL = _Variant("blazeface_full_sparse", 192, (4,), 1, 0.6)


def ssd_anchors(input_size: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """Anchor centres ``(A, 2)`` in [0, 1], in the model's output order.

    Layers that share a stride are merged into one grid with all their anchors per cell (as MediaPipe does); with
    ``fixed_anchor_size`` every anchor is 1×1, so only centres matter.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = anchors_per_layer * (last - layer)
        side = int(np.ceil(input_size / strides[layer]))
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceDetector(FaceDetector):
    """BlazeFace: box + 6 keypoints (``keypoints6``; no mouth corners, so ``keypoints5`` is None).

    Input: RGB, any size (letterboxed to the model's square input, so ``max_side`` has no effect). Scores are
    sigmoid probabilities; ``min_score`` None keeps MediaPipe's threshold (0.5 short range, 0.6 full range).
    The model's keypoint order (right eye, left eye, nose tip, mouth centre, right ear, left ear of the subject)
    already starts with the image-left eye of an upright face, so it is kept as is.
    """

    name: str
    version: str
    variant: _Variant
    nms_threshold = 0.3  # min_suppression_threshold of the MediaPipe graph

    def __init__(self, max_side: int | None = None, min_score: float | None = None, threads: int = 1) -> None:
        from pipeline.kernels import litert_interpreter

        del max_side  # fixed input size: kept so every detector takes the same common arguments
        self.min_score = self.variant.min_score if min_score is None else float(min_score)
        # LiteRT's reference kernels unless models.determinism is fast: XNNPACK's follow the CPU
        self._interp = litert_interpreter(model_path(self.variant.model_key), threads)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        outputs = {int(o["shape"][-1]): o for o in self._interp.get_output_details()}
        self._regressors, self._scores = outputs[16]["index"], outputs[1]["index"]
        v = self.variant
        self._anchors = ssd_anchors(v.input_size, v.strides, v.anchors_per_layer)
        if len(self._anchors) != int(outputs[16]["shape"][1]):
            raise RuntimeError(f"{v.model_key}: {len(self._anchors)} anchors for {outputs[16]['shape'][1]} outputs")

    def detect(self, rgb: np.ndarray) -> Detections:
        size = self.variant.input_size
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
        canvas = np.zeros((size, size, 3), np.float32)
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
        self._interp.set_tensor(self._input, (canvas / 127.5 - 1.0)[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._regressors)[0]
        logits = np.clip(self._interp.get_tensor(self._scores)[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return empty(keypoints6=True)
        raw, scores, anchors = raw[keep] / size, scores[keep], self._anchors[keep]
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        boxes, scores, merged = weighted_nms(boxes, scores, points, self.nms_threshold)
        assert merged is not None  # points were given, so merged points come back
        # Undo the letterbox: normalised input coordinates → frame pixels.
        offset = np.array([pad_x, pad_y], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) * size - offset) / scale).reshape(-1, 4)
        points = (merged * size - offset) / scale
        return Detections(boxes.astype(np.float32), scores.astype(np.float32), None, points.astype(np.float32))


class BlazeFaceShort(BlazeFaceDetector):
    """BlazeFace short range (128×128 input): faces filling a good part of the frame (within ~2 m of a camera)."""

    name, version, variant = "blazeface_short", "mediapipe-0.10.21/face_detection_short_range", _SHORT


class BlazeFaceFull(BlazeFaceDetector):
    """BlazeFace full range (192×192 input, sparse weights): smaller and farther faces as well."""

    name, version, variant = "blazeface_full", "mediapipe-0.10.21/face_detection_full_range_sparse", _FULL
