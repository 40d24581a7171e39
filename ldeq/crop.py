"""The WFLW-V crop: a square of side 1.2 × max box side around the box, warped to the network input."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["crop_transform", "crop_image", "to_crop", "from_crop", "normalize_image"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def crop_transform(box: np.ndarray, size: int, scale: float = 1.2) -> np.ndarray:
    """2×3 affine from frame pixels to an ``size``×``size`` crop, as ``get_transform_from_bbox`` of WFLW-V.

    The box is rounded to ints (+0.5); centre (x1 + w//2, y1 + h//2) with w = x2 − x1 + 1; side
    ``scale`` × max(x2 − x1, y2 − y1); square, no rotation.
    """
    x1, y1, x2, y2 = (int(float(v) + 0.5) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    cx, cy = x1 + w // 2, y1 + h // 2
    side = max(scale * max(x2 - x1, y2 - y1), 1.0)
    s = size / side
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)


def crop_image(rgb: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp a frame into the crop (bilinear, zero padding)."""
    return cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Frame pixels (…, 2) → crop pixels."""
    return points @ affine[:, :2].T + affine[:, 2]


def from_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Crop pixels (…, 2) → frame pixels (inverse of :func:`to_crop`)."""
    inverse = cv2.invertAffineTransform(affine)
    return points @ inverse[:, :2].T + inverse[:, 2]


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) → float32 CHW with ImageNet mean/std."""
    return ((rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
