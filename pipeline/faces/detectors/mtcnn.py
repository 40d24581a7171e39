"""MTCNN (P-, R- and O-Net cascade) with facenet-pytorch 2.6.0's weights, ported to plain torch + numpy.

facenet-pytorch's own module imports torchvision (for NMS and ``to_tensor``), which cannot be imported beside this
project's CPU torch, so the three small networks and the cascade of ``detect_face`` are re-implemented here; the
state dicts load with ``torch.load(weights_only=True)`` into layers of the same names.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.faces.detectors.base import Detections, FaceDetector, downscale, empty, nms
from pipeline.models_store import model_path

__all__ = ["MTCNNDetector"]


class _PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)


class _RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.pool2(self.prelu2(self.conv2(x)))))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))  # Caffe's flatten order
        return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)


class _ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu4(self.conv4(self.pool3(self.prelu3(self.conv3(x)))))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(dim=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (``rerec``)."""
    wh = boxes[:, 2:4] - boxes[:, :2]
    side = wh.max(axis=1, keepdims=True)
    out = boxes.copy()
    out[:, :2] = boxes[:, :2] + wh / 2 - side / 2
    out[:, 2:4] = out[:, :2] + side
    return out


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply box regression offsets (fractions of the box size, ``bbreg``)."""
    wh = boxes[:, 2:4] - boxes[:, :2] + 1
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + reg * np.concatenate([wh, wh], axis=1)
    return out


class MTCNNDetector(FaceDetector):
    """MTCNN: box + 5 keypoints.

    Input: RGB, downscaled so the longer side is at most ``max_side``; pixels are scaled to (x − 127.5) / 128 as
    trained. ``min_face`` (px of the downscaled frame), ``factor`` (pyramid step) and ``thresholds`` (per stage)
    are facenet-pytorch's defaults; ``min_score`` is the O-Net threshold (None: ``thresholds[2]``). Scores are
    O-Net face probabilities; keypoints (image-left eye, image-right eye, nose, mouth corners) are in
    :data:`~pipeline.faces.detectors.base.KEYPOINTS5` order already. ``threads`` not None sets torch's
    process-wide thread count (more threads than free cores slows these small nets down many times over).
    """

    name, version = "mtcnn", "facenet-pytorch-2.6.0/mtcnn"

    def __init__(self, max_side: int | None = 640, min_score: float | None = None, min_face: float = 20.0,
                 factor: float = 0.709, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.pnet, self.rnet, self.onet = _PNet(), _RNet(), _ONet()
        for net, key in ((self.pnet, "mtcnn_pnet"), (self.rnet, "mtcnn_rnet"), (self.onet, "mtcnn_onet")):
            net.load_state_dict(torch.load(model_path(key), map_location="cpu", weights_only=True))
            net.eval()
        self.max_side, self.min_face, self.factor = max_side, min_face, factor
        self.thresholds = tuple(thresholds)
        self.min_score = self.thresholds[2] if min_score is None else float(min_score)

    @staticmethod
    def _resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # facenet-pytorch resamples with torch's "area" mode (adaptive average pooling), as the cascade expects.
        return torch.nn.functional.interpolate(image, size=size, mode="area")

    def _crops(self, image: torch.Tensor, boxes: np.ndarray, side: int) -> tuple[torch.Tensor | None, np.ndarray]:
        """Crops of the (1, 3, H, W) frame resized to ``side`` (None if all are empty), and which boxes gave one."""
        h, w = image.shape[2:]
        ints = np.trunc(boxes[:, :4]).astype(np.int64)
        x1, y1 = np.maximum(ints[:, 0], 1), np.maximum(ints[:, 1], 1)
        x2, y2 = np.minimum(ints[:, 2], w), np.minimum(ints[:, 3], h)
        valid = (y2 > y1 - 1) & (x2 > x1 - 1)
        if not valid.any():
            return None, valid
        crops = [self._resample(image[:, :, y1[k] - 1:y2[k], x1[k] - 1:x2[k]], (side, side))
                 for k in np.flatnonzero(valid)]
        return (torch.cat(crops) - 127.5) * 0.0078125, valid

    def detect(self, rgb: np.ndarray) -> Detections:
        frame, scale = downscale(rgb, self.max_side)
        h, w = frame.shape[:2]
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
            boxes = self._proposals(image, h, w)
            if len(boxes):
                boxes = _square(boxes)
                crops, valid = self._crops(image, boxes, 24)
                boxes = boxes[valid]
                if crops is not None:
                    reg, prob = (t.numpy() for t in self.rnet(crops))
                    ok = prob[:, 1] > self.thresholds[1]
                    boxes, reg = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], axis=1), reg[ok]
                    keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
                    boxes = _square(_refine(boxes[keep], reg[keep]))
            crops, valid = self._crops(image, boxes, 48) if len(boxes) else (None, np.zeros(0, bool))
            if crops is None:
                return empty(keypoints5=True)
            reg, marks, prob = (t.numpy() for t in self.onet(crops))
        boxes, prob = boxes[valid], prob[:, 1]
        ok = prob > self.min_score  # replaces the O-Net stage threshold (its default)
        boxes, reg, marks, prob = boxes[ok, :4], reg[ok], marks[ok], prob[ok]
        if not len(boxes):
            return empty(keypoints5=True)
        wh = boxes[:, 2:4] - boxes[:, :2] + 1
        points = np.stack([wh[:, None, 0] * marks[:, :5] + boxes[:, None, 0] - 1,
                           wh[:, None, 1] * marks[:, 5:] + boxes[:, None, 1] - 1], axis=2)
        boxes = _refine(boxes, reg)
        keep = nms(boxes, prob, 0.7, min_overlap=True)
        return Detections((boxes[keep] / scale).astype(np.float32), prob[keep].astype(np.float32),
                          (points[keep] / scale).astype(np.float32))

    def _proposals(self, image: torch.Tensor, h: int, w: int) -> np.ndarray:
        """P-Net over the image pyramid: candidate boxes (N, 5) x1, y1, x2, y2, score after regression."""
        scale = 12.0 / self.min_face
        scales, side = [], min(h, w) * scale
        while side >= 12:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        found = []
        for s in scales:
            level = (self._resample(image, (int(h * s + 1), int(w * s + 1))) - 127.5) * 0.0078125
            reg, prob = self.pnet(level)
            prob, reg = prob[0, 1].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if ys.size == 0:
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float32)
            boxes = np.concatenate([np.floor((2 * cells + 1) / s), np.floor((2 * cells + 12) / s),
                                    prob[ys, xs, None], reg[:, ys, xs].T], axis=1)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        wh = boxes[:, 2:4] - boxes[:, :2]
        corners = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([wh, wh], axis=1)
        return np.concatenate([corners, boxes[:, 4:5]], axis=1)
