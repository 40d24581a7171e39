"""WFLW-98 layout as data: flip permutation, 98→68 map, normaliser indices.

Index conventions are 0-based, as in the official WFLW annotation files and the LDEQ code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NUM_POINTS", "FLIP_PERMUTATION", "WFLW_TO_IBUG68", "INTEROCULAR", "REGION_POINTS", "POINT_NAMES",
           "flip_points", "interocular"]

NUM_POINTS = 98

#: Outer eye corners: the inter-ocular normaliser of NME on WFLW.
INTEROCULAR = (60, 72)

#: Horizontal-flip permutation: after mirroring x, point i takes the old point FLIP_PERMUTATION[i]. An involution.
FLIP_PERMUTATION = np.array(
    list(range(32, -1, -1))
    + [46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38]
    + [51, 52, 53, 54, 59, 58, 57, 56, 55]
    + [72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65]
    + [82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96],
    dtype=np.int64,
)

#: iBUG-68 position k takes WFLW index WFLW_TO_IBUG68[k].
WFLW_TO_IBUG68 = np.array(
    list(range(0, 33, 2))
    + [33, 34, 35, 36, 37, 42, 43, 44, 45, 46]
    + [51, 52, 53, 54, 55, 56, 57, 58, 59]
    + [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75]
    + list(range(76, 96)),
    dtype=np.int64,
)


#: Named regions of the layout, in point order. "left"/"right" are as seen in the image (point 60 is the outer corner
#: of the image-left eye, as in the WFLW annotation files); each region runs as the annotation files order it
#: (contour from the image-left temple over the chin; upper brow edge, then lower; eyes from corner to corner
#: clockwise; lips from the image-left mouth corner).
REGION_POINTS: dict[str, range] = {
    "contour": range(0, 33),
    "left_brow": range(33, 42),
    "right_brow": range(42, 51),
    "nose_bridge": range(51, 55),
    "nose_base": range(55, 60),
    "left_eye": range(60, 68),
    "right_eye": range(68, 76),
    "outer_lip": range(76, 88),
    "inner_lip": range(88, 96),
    "pupils": range(96, 98),
}

#: One name per point, ``<region>_<index within the region>``: ``contour_00`` … ``pupils_01`` (tools that show names,
#: such as the review's Label Studio tasks, use these).
POINT_NAMES: tuple[str, ...] = tuple(f"{region}_{k:02d}" for region, idx in REGION_POINTS.items()
                                     for k in range(len(idx)))

def interocular(points: np.ndarray, pair: tuple[int, int] = INTEROCULAR) -> np.ndarray:
    """The distance between two points of each shape (..., 98, 2): by default the outer eye corners, the inter-ocular
    distance that normalises NME on WFLW. Shape (...); NaN where a corner is undefined."""
    a, b = pair
    return np.linalg.norm(points[..., b, :] - points[..., a, :], axis=-1)


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror WFLW-98 points (..., 98, 2) horizontally in an image of ``width`` pixels and re-order them.

    Pixel centres sit at integers, so x maps to ``width - 1 - x``.
    """
    out = points[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out
