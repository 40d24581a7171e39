"""insightface SCRFD, from a locally unpacked insightface model pack (no pack is published on a package registry)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale, empty
from pipeline.models_store import ModelUnavailable

__all__ = ["SCRFDDetector", "find_scrfd"]

_CANDIDATES = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_10g_bnkps.onnx", "scrfd_2.5g_bnkps.onnx",
               "scrfd_500m_bnkps.onnx")


def find_scrfd(pack: str) -> Path:
    """The SCRFD ONNX file of model pack ``pack`` under ``$INSIGHTFACE_HOME/models`` (default ``~/.insightface``)."""
    root = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")) / "models" / pack
    for name in _CANDIDATES:
        if (root / name).is_file():
            return root / name
    raise ModelUnavailable(
        f"model 'scrfd': no SCRFD file ({', '.join(_CANDIDATES)}) in {root}; unpack an insightface model pack there "
        "(not on any package registry; its models are licensed for non-commercial research only)"
    )


class SCRFDDetector(FaceDetector):
    """insightface SCRFD: box + 5 keypoints, run by insightface's own ``SCRFD`` wrapper on onnxruntime (CPU).

    Input: RGB, converted to BGR as insightface expects, downscaled so the longer side is at most ``max_side``,
    letterboxed by insightface to ``input_size``. ``model_file`` overrides the pack lookup. Scores are probabilities;
    ``min_score`` None means insightface's 0.5. Keypoints are insightface's (image-left eye, image-right eye, nose,
    mouth corners), i.e. :data:`~pipeline.faces.detectors.base.KEYPOINTS5` order. No checksum: the file is local.
    """

    name = "scrfd"

    def __init__(self, max_side: int | None = 640, min_score: float | None = None, pack: str = "buffalo_l",
                 model_file: str | None = None, input_size: int = 640, threads: int = 1) -> None:
        path = Path(model_file) if model_file else find_scrfd(pack)
        if not path.is_file():
            raise ModelUnavailable(f"model 'scrfd': {path} does not exist")
        import onnxruntime as ort
        from insightface.model_zoo.scrfd import SCRFD

        self.version = f"insightface-2.1/{path.name}"
        self.max_side = max_side
        self.min_score = 0.5 if min_score is None else float(min_score)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._model = SCRFD(model_file=str(path), session=session)
        self._model.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=self.min_score)

    def detect(self, rgb: np.ndarray) -> Detections:
        image, scale = downscale(rgb, self.max_side)
        det, kps = self._model.detect(np.ascontiguousarray(image[:, :, ::-1]))
        if len(det) == 0:
            return empty(keypoints5=True)
        points = (np.asarray(kps, np.float32) if kps is not None else np.full((len(det), 5, 2), np.nan)) / scale
        return Detections((det[:, :4] / scale).astype(np.float32), det[:, 4].astype(np.float32),
                          points.astype(np.float32))
