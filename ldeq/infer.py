"""Video inference: every frame from scratch, or RwR (warm start from the previous frame's equilibrium)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ldeq.crop import crop_image, crop_transform, from_crop, normalize_image
from ldeq.model import LDEQ

__all__ = ["VideoPrediction", "predict_video"]


@dataclass(frozen=True)
class VideoPrediction:
    """Landmarks in frame pixels (F, L, 2), f calls per frame (F,), and seconds of model time per frame (F,)."""

    points: np.ndarray
    calls: np.ndarray
    seconds: np.ndarray


@torch.no_grad()
def predict_video(model: LDEQ, frames: Iterable[np.ndarray], boxes: np.ndarray, rwr: bool = False,
                  rwr_iters: int = 1, frame0_full_solve: bool = True, rwr_gamma: float = 0.0) -> VideoPrediction:
    """Predict landmarks for every frame, one frame at a time.

    Args:
        model: an LDEQ in eval mode.
        frames: RGB frames (H, W, 3) uint8, in order.
        boxes: (F, 4) face boxes; each frame is cropped from its own box (WFLW-V crop).
        rwr: warm-start frame t from z*_{t−1} and run ``rwr_iters`` solver iterations (+ the extra step).
        frame0_full_solve: give frame 0 the full solver budget (the released code under-converges it).
        rwr_gamma: 0 reproduces the released code (warm start + early stop only); γ > 0 also anchors each frame's
            map to the previous equilibrium, z ← (f(z) + γ z*_{t−1}) / (1 + γ), the proximal reading of RwR.
    """
    model.eval()
    size = model.cfg.input_size
    points, calls, seconds = [], [], []
    z_prev: torch.Tensor | None = None
    for t, rgb in enumerate(frames):
        affine = crop_transform(boxes[t], size)
        image = torch.from_numpy(normalize_image(crop_image(rgb, affine, size)))[None]
        started = time.perf_counter()
        if rwr and z_prev is not None:
            out = model(image, z0=z_prev, max_iters=rwr_iters, anchor=z_prev, gamma=rwr_gamma)
        elif rwr and not frame0_full_solve:
            out = model(image, max_iters=rwr_iters)
        else:
            out = model(image)
        seconds.append(time.perf_counter() - started)
        calls.append(out.info.calls)
        z_prev = out.z
        crop_pts = out.landmarks[0].numpy().astype(np.float64) * size
        points.append(from_crop(crop_pts, affine))
    return VideoPrediction(np.array(points, np.float32), np.array(calls), np.array(seconds))
