"""WFLW readers: the official annotation files (207 tokens a line) and the pre-cropped (HIH/PFLD) layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ldeq.crop import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ldeq.geometry import apply_affine
from ldeq.train import Augment, _augment
from ldeq.wflw import NUM_POINTS

__all__ = ["WFLWRecord", "ATTRIBUTES", "read_wflw_annotations", "read_precropped", "pfld_crop", "WFLWImages"]

ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
TOKENS = 2 * NUM_POINTS + 4 + len(ATTRIBUTES) + 1  # 207


@dataclass(frozen=True)
class WFLWRecord:
    """One annotated face: image path (relative to ``WFLW_images/``), 98 points, face rectangle, attributes."""

    image: str
    points: np.ndarray
    box: np.ndarray
    attributes: dict[str, bool]


def read_wflw_annotations(path: str | Path) -> list[WFLWRecord]:
    """Read ``list_98pt_rect_attr_{train,test}.txt``; a malformed line raises ``ValueError`` naming file and line."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != TOKENS:
            raise ValueError(f"{path}:{number}: expected {TOKENS} tokens, found {len(tokens)}")
        try:
            points = np.array(tokens[: 2 * NUM_POINTS], np.float32).reshape(NUM_POINTS, 2)
            box = np.array(tokens[2 * NUM_POINTS : 2 * NUM_POINTS + 4], np.float32)
            flags = [int(t) for t in tokens[2 * NUM_POINTS + 4 : -1]]
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        records.append(WFLWRecord(tokens[-1], points, box, dict(zip(ATTRIBUTES, map(bool, flags)))))
    return records


def read_precropped(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Read a pre-cropped ``<split>.txt``: ``image_name x1 y1 … x98 y98`` with coordinates in [0, 1] of the crop."""
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 1 + 2 * NUM_POINTS:
            raise ValueError(f"{path}:{number}: expected {1 + 2 * NUM_POINTS} tokens, found {len(tokens)}")
        out.append((tokens[0], np.array(tokens[1:], np.float32).reshape(NUM_POINTS, 2)))
    return out


def pfld_crop(image: np.ndarray, record: WFLWRecord, size: int, scale: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """The crop LDEQ's WFLW data was made with: box over the 98 points and the 2 rectangle corners, a square of
    side ``int(scale · max(w, h))`` around its centre, zero-padded outside the image, resized to ``size``.

    Returns the crop and the points in crop pixels.
    """
    corners = np.concatenate([record.points, record.box.reshape(2, 2)])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    side = int(scale * float(max(hi - lo)))
    centre = (lo + hi) / 2
    x0, y0 = (centre - side / 2).astype(int)
    s = size / max(side, 1)
    affine = np.array([[s, 0, -s * x0], [0, s, -s * y0]], np.float64)
    crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, apply_affine(record.points, affine).astype(np.float32)


class WFLWImages(Dataset):
    """WFLW training images from the official annotations, cropped on the fly; targets in [0, 1) of the crop.

    Images are normalised with ``mean``/``std`` (the model config's, ImageNet by default).
    """

    def __init__(self, annotations: str | Path, images_root: str | Path, size: int, augment: Augment | None = None,
                 seed: int = 0, mean: Sequence[float] | np.ndarray = IMAGENET_MEAN,
                 std: Sequence[float] | np.ndarray = IMAGENET_STD) -> None:
        self.records = read_wflw_annotations(annotations)
        self.root, self.size, self.augment, self.seed, self.epoch = Path(images_root), size, augment, seed, 0
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[i]
        bgr = cv2.imread(str(self.root / record.image))
        if bgr is None:
            raise FileNotFoundError(f"WFLW image {self.root / record.image} is missing or unreadable")
        crop, pts = pfld_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), record, self.size)
        if self.augment is not None:
            crop, pts = _augment(crop, pts, self.augment, np.random.default_rng([self.seed, self.epoch, i]))
        image = normalize_image(crop, self.mean, self.std)
        return torch.from_numpy(image), torch.from_numpy((pts / self.size).astype(np.float32))
