"""Landmark schemes as data, and linear maps from each native scheme to the common WFLW-98 scheme.

A map is a ``(98, K)`` weight matrix ``W`` plus a ``(98,)`` mask: ``wflw = W @ native`` where the mask is True.
Points a scheme cannot define (iBUG-68 has no lower brow edge) are masked out instead of guessed; interpolated
points (contour points between two iBUG ones) carry their weights openly in the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ldeq.wflw import NUM_POINTS, WFLW_TO_IBUG68

__all__ = ["SchemeMap", "to_wflw98", "scheme_map", "NATIVE_SIZES", "MESH468_TO_IBUG68", "FIVE_TO_WFLW98", "REGIONS",
           "REGION_OF_POINT", "POINTS68"]

NATIVE_SIZES = {"wflw98": 98, "ibug68": 68, "mesh468": 468, "five": 5}

#: WFLW-98 point of each face-detector keypoint (order of ``pipeline.faces.detectors.KEYPOINTS5``). WFLW's points 96
#: and 97 are the pupils, i.e. the eye centres detectors are trained to mark (WIDER FACE / CelebA style), so the map
#: is point-to-point: image-left eye → 96, image-right eye → 97, nose tip → 54, mouth corners → 76 and 82.
FIVE_TO_WFLW98 = np.array([96, 97, 54, 76, 82], dtype=np.int64)

#: WFLW-98 regions; consensus weights and offsets are per family and per region.
REGIONS: dict[str, np.ndarray] = {
    "contour": np.arange(0, 33),
    "brows": np.arange(33, 51),
    "nose": np.arange(51, 60),
    "eyes": np.r_[np.arange(60, 76), 96, 97],
    "mouth": np.arange(76, 96),
}

#: Region index (into ``list(REGIONS)``) of every WFLW-98 point.
REGION_OF_POINT = np.zeros(98, np.int64)
for _k, _idx in enumerate(REGIONS.values()):
    REGION_OF_POINT[_idx] = _k

#: The WFLW-98 points that are iBUG-68 points (NME on "the 68-point subset").
POINTS68 = np.sort(WFLW_TO_IBUG68)

#: MediaPipe face mesh vertex for each iBUG-68 point (subject's right side first, as in iBUG).
MESH468_TO_IBUG68 = np.array(
    [127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356]  # jaw
    + [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]  # brows, upper edge
    + [168, 197, 5, 4, 75, 97, 2, 326, 305]  # nose bridge, nose base
    + [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380]  # eyes
    + [61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181]  # outer lip
    + [78, 82, 13, 312, 308, 317, 14, 87],  # inner lip
    dtype=np.int64,
)

#: Mesh vertices for WFLW points that iBUG-68 lacks: lower brow edges and mid-eyelids.
_MESH_EXTRA = {38: 65, 39: 52, 40: 53, 41: 46, 47: 276, 48: 283, 49: 282, 50: 295, 62: 159, 66: 145, 70: 386, 74: 374}


@dataclass(frozen=True)
class SchemeMap:
    """Weights (98, K) and validity mask (98,) from a native scheme to WFLW-98."""

    source: str
    weights: np.ndarray
    mask: np.ndarray


def _from_ibug68(n_native: int, ibug_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights from a scheme whose iBUG-68 points sit at ``ibug_index`` (length 68) among ``n_native`` points."""
    weights = np.zeros((NUM_POINTS, n_native), np.float64)
    mask = np.zeros(NUM_POINTS, bool)

    def put(wflw: int, parts: dict[int, float]) -> None:
        for ibug, w in parts.items():
            weights[wflw, ibug_index[ibug]] += w
        mask[wflw] = True

    for ibug, wflw in enumerate(WFLW_TO_IBUG68):
        put(int(wflw), {ibug: 1.0})
    for k in range(16):  # odd WFLW contour points lie between two iBUG jaw points
        put(2 * k + 1, {k: 0.5, k + 1: 0.5})
    for wflw, (a, b) in {62: (37, 38), 66: (40, 41), 70: (43, 44), 74: (46, 47)}.items():
        put(wflw, {a: 0.5, b: 0.5})
    put(96, {i: 1 / 6 for i in range(36, 42)})
    put(97, {i: 1 / 6 for i in range(42, 48)})
    return weights, mask


@cache
def scheme_map(source: str) -> SchemeMap:
    """Return the map from scheme ``source`` (``wflw98``, ``ibug68``, ``mesh468`` or ``five``) to WFLW-98."""
    if source == "wflw98":
        return SchemeMap(source, np.eye(NUM_POINTS), np.ones(NUM_POINTS, bool))
    if source == "ibug68":
        weights, mask = _from_ibug68(68, np.arange(68))
        return SchemeMap(source, weights, mask)
    if source == "mesh468":
        weights, mask = _from_ibug68(468, MESH468_TO_IBUG68)
        for wflw, vertex in _MESH_EXTRA.items():
            weights[wflw] = 0.0
            weights[wflw, vertex] = 1.0
            mask[wflw] = True
        return SchemeMap(source, weights, mask)
    if source == "five":
        weights = np.zeros((NUM_POINTS, 5), np.float64)
        weights[FIVE_TO_WFLW98, np.arange(5)] = 1.0
        mask = np.zeros(NUM_POINTS, bool)
        mask[FIVE_TO_WFLW98] = True
        return SchemeMap(source, weights, mask)
    raise KeyError(f"no map from scheme {source!r} to wflw98; known: {sorted(NATIVE_SIZES)}")


def to_wflw98(points: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Map native points ``(K, 2)`` to WFLW-98 ``(98, 2)``; masked-out rows are NaN. Returns (points, mask)."""
    smap = scheme_map(source)
    if points.shape[0] != smap.weights.shape[1]:
        raise ValueError(f"scheme {source!r} has {smap.weights.shape[1]} points, got {points.shape[0]}")
    out = (smap.weights @ points.astype(np.float64)).astype(np.float32)
    out[~smap.mask] = np.nan
    return out, smap.mask.copy()
