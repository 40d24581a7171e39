"""Plane geometry shared by the LDEQ crops and the pipeline's face and landmark models."""

from __future__ import annotations

import numpy as np

__all__ = ["apply_affine"]


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points (…, 2) mapped by a 2×3 affine (OpenCV's layout: ``[A | t]``, x' = A x + t), in their own dtype's
    arithmetic (cast first where the rounding matters)."""
    return points @ affine[:, :2].T + affine[:, 2]
