"""Video inference: every frame from scratch, or RwR (warm start from the previous frame's equilibrium)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from ldeq.crop import from_crop, network_input
from ldeq.kernels import exact_cpu_kernels
from ldeq.model import LDEQ

__all__ = ["RwR", "VideoPrediction", "exact_cpu_kernels", "predict_video", "warp_heatmaps"]


@dataclass(frozen=True)
class VideoPrediction:
    """Landmarks in frame pixels (F, L, 2), f calls per frame (F,), and seconds of model time per frame (F,)."""

    points: np.ndarray
    calls: np.ndarray
    seconds: np.ndarray


@dataclass(frozen=True)
class RwR:
    """How RwR runs: warm-start frame t from z*_{t−1} and run ``iters`` fixed-point iterations (+ the extra step),
    whatever the model's solver (Anderson needs two calls before its first accelerated step, fpi gives 1 + 1 calls).

    Attributes:
        iters: fixed-point iterations per warm-started frame.
        frame0_full_solve: give frame 0 the full solver budget (the released code runs every frame, frame 0
            included, with ``rwr_max_iters``; ``False`` reproduces that).
        align: resample z*_{t−1} from frame t−1's crop into frame t's before using it. Each frame is cropped from
            its own box, so an unaligned warm start (the released code) carries heatmaps whose peaks sit where the
            landmarks were in the *previous* crop: every box step then becomes a landmark step.
        gamma: 0 reproduces the released code (warm start + early stop only); γ > 0 also anchors each frame's
            map to the previous equilibrium, z ← (f(z) + γ z*_{t−1}) / (1 + γ), the proximal reading of RwR.
    """

    iters: int
    frame0_full_solve: bool
    align: bool
    gamma: float


@torch.no_grad()
def predict_video(model: LDEQ, frames: Iterable[np.ndarray], boxes: np.ndarray,
                  rwr: RwR | None = None) -> VideoPrediction:
    """Predict landmarks for every frame, one frame at a time.

    Args:
        model: an LDEQ in eval mode.
        frames: RGB frames (H, W, 3) uint8, in order.
        boxes: (F, 4) face boxes; each frame is cropped from its own box with the model's crop convention
            (``cfg.crop_scale``, ``cfg.mean``/``cfg.std``), as the released evaluation does
            (:func:`ldeq.crop.network_input`).
        rwr: how to warm-start each frame from the previous one (:class:`RwR`); None solves every frame from scratch.
    """
    model.eval()
    cfg = model.cfg
    size = cfg.input_size
    device = next(model.parameters()).device
    points, calls, seconds = [], [], []
    z_prev: torch.Tensor | None = None
    prev_affine: np.ndarray | None = None
    for t, rgb in enumerate(frames):
        chw, affine = network_input(rgb, boxes[t], size, cfg.crop_scale, cfg.mean, cfg.std)
        image = torch.from_numpy(chw)[None].to(device)
        _synchronize(device)
        started = time.perf_counter()
        if rwr is not None and rwr.align and z_prev is not None and prev_affine is not None:
            z_prev = warp_heatmaps(z_prev, prev_affine, affine, size)
        if rwr is not None and z_prev is not None:
            out = model(image, z0=z_prev, max_iters=rwr.iters, anchor=z_prev, gamma=rwr.gamma, solver="fpi")
        elif rwr is not None and not rwr.frame0_full_solve:
            out = model(image, max_iters=rwr.iters)
        else:
            out = model(image)
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
        calls.append(out.info.calls)
        z_prev, prev_affine = out.z, affine
        crop_pts = out.landmarks[0].cpu().numpy().astype(np.float64) * size
        points.append(from_crop(crop_pts, affine))
    return VideoPrediction(np.array(points, np.float32), np.array(calls), np.array(seconds))


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so per-frame seconds measure the model rather than the launch queue."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warp_heatmaps(z: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, input_size: int) -> torch.Tensor:
    """Resample heatmaps (B, L, h, w) made on the crop ``src_affine`` into the crop ``dst_affine`` (both frame → crop).

    Heatmap pixel j sits at crop pixel j·input_size/w (the soft-argmax convention, no half-pixel offset); outside the
    source crop the border value is repeated, which is the heatmaps' flat background.
    """
    h, w = z.shape[-2:]
    stride = input_size / w

    def homogeneous(affine: np.ndarray) -> np.ndarray:
        return np.vstack([affine, [0.0, 0.0, 1.0]])

    to_heatmap = np.diag([1 / stride, 1 / stride, 1.0])
    # grid_sample's normalised coordinates (align_corners=True): −1 and +1 are the first and last pixel centres
    to_normalised = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
    dst_to_src = homogeneous(src_affine) @ np.linalg.inv(homogeneous(dst_affine))  # crop_t → crop_{t−1} pixels
    theta = to_normalised @ to_heatmap @ dst_to_src @ np.linalg.inv(to_normalised @ to_heatmap)
    theta_t = torch.as_tensor(theta[:2], dtype=z.dtype, device=z.device)[None].expand(z.shape[0], -1, -1)
    grid = F.affine_grid(theta_t, list(z.shape), align_corners=True)
    return F.grid_sample(z, grid, mode="bilinear", padding_mode="border", align_corners=True)
