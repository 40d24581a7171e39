"""The WFLW-V crop: a square of side 1.2 × max box side around the box, warped to the network input.

Each step mirrors the released WFLW-V evaluation (``test_LDEQ_WFLW_V.py`` and ``datasets/WFLW_V/helpers.py`` of
``polo5/LDEQ_RwR``); :func:`network_input` chains them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ldeq.geometry import apply_affine

__all__ = ["crop_transform", "crop_image", "to_crop", "from_crop", "normalize_image", "network_input",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def crop_transform(box: np.ndarray, size: int, scale: float = 1.2) -> np.ndarray:
    """2×3 affine from frame pixels to an ``size``×``size`` crop, as the released ``get_transform_from_bbox``.

    The box is rounded to ints (+0.5, truncated like ``astype(np.int32)``); centre (x1 + w//2, y1 + h//2) with
    w = x2 − x1 + 1; side ``scale`` × max(x2 − x1, y2 − y1); square, no rotation. The released code builds the same
    matrix from three float32 point pairs (``cv2.getAffineTransform``), so the two agree to float32 rounding.
    """
    x1, y1, x2, y2 = (int(float(v) + 0.5) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    cx, cy = x1 + w // 2, y1 + h // 2
    side = max(scale * max(x2 - x1, y2 - y1), 1.0)
    s = size / side
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)


def crop_image(rgb: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp a frame into the crop: ``cv2.warpAffine`` bilinear with a zero border, as released."""
    return cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Frame pixels (…, 2) → crop pixels."""
    return apply_affine(points, affine)


def from_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Crop pixels (…, 2) → frame pixels (inverse of :func:`to_crop`)."""
    return apply_affine(points, cv2.invertAffineTransform(affine))


def normalize_image(rgb: np.ndarray, mean: Sequence[float] | np.ndarray = IMAGENET_MEAN,
                    std: Sequence[float] | np.ndarray = IMAGENET_STD) -> np.ndarray:
    """uint8 RGB (H, W, 3) → float32 CHW, (x / 255 − mean) / std: torchvision's ``ToTensor`` + ``Normalize``."""
    mean_, std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((rgb.astype(np.float32) / 255.0 - mean_) / std_).transpose(2, 0, 1)


def network_input(rgb: np.ndarray, box: np.ndarray, size: int, scale: float = 1.2,
                  mean: Sequence[float] | np.ndarray = IMAGENET_MEAN,
                  std: Sequence[float] | np.ndarray = IMAGENET_STD) -> tuple[np.ndarray, np.ndarray]:
    """One frame's network input (3, size, size) float32 and its crop affine, as the released WFLW-V evaluation.

    The released script, per frame: ``get_transform_from_bbox(bbox, extra_scale=1.2, target_im_size=256)``
    (:func:`crop_transform`); ``cv2.warpAffine(frame, M, (256, 256), flags=INTER_LINEAR)`` (:func:`crop_image`);
    ``cv2.cvtColor(face, COLOR_RGB2BGR)`` on an OpenCV (BGR) frame, i.e. a channel swap to RGB (our frames are RGB
    already, and warping commutes with the swap); ``ToTensor`` + ``Normalize(ImageNet mean, std)``
    (:func:`normalize_image`). Predictions ×256 go back through the inverse affine (:func:`from_crop`).
    """
    affine = crop_transform(box, size, scale)
    return normalize_image(crop_image(rgb, affine, size), mean, std), affine
