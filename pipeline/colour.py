"""RGB ↔ YUV 4:2:0 in exact integer arithmetic, so decoded pixels are the same on every CPU.

FFmpeg's swscale picks SIMD kernels by CPU feature at run time, and those kernels are not bit-exact with each other
(rounding differs), so the same video decoded to RGB on two machines can differ by a level here and there — and every
float model downstream then sees other pixels. OpenCV's I420 conversions are fixed-point integer code whose SIMD and
scalar paths give identical bytes (checked with OpenCV's dispatch cut to SSE2 and with optimisations off; the demo
test repeats the check) and take ~5 ms for a 720p frame; full-range (JPEG) video and odd frame sizes, which they do
not cover, use the numpy versions below (BT.601 in 8-bit fixed point, exact on any CPU, ~10× slower).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["rgb_to_yuv420", "yuv420_to_rgb", "rgb_to_yuv420_numpy", "yuv420_to_rgb_numpy"]


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (H, W, 3) uint8 with even H, W → limited-range BT.601 planes Y (H, W), U and V (H/2, W/2)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420 needs even dimensions, got {w}x{h}")
    i420 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).reshape(-1)
    q = (h // 2) * (w // 2)
    return (i420[: h * w].reshape(h, w), i420[h * w: h * w + q].reshape(h // 2, w // 2),
            i420[h * w + q:].reshape(h // 2, w // 2))


def rgb_to_yuv420_numpy(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy reference of :func:`rgb_to_yuv420` (same contract, different rounding of chroma)."""
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # chroma of the 2×2 block mean (sum then rounded division), as a box-filtered 4:2:0 subsample
    def block(channel: np.ndarray) -> np.ndarray:
        return channel.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))

    rs, gs, bs = block(r), block(g), block(b)  # sums of 4 pixels: coefficients scale by 4, shift by 2 more
    u = ((-38 * rs - 74 * gs + 112 * bs + 512) >> 10) + 128
    v = ((112 * rs - 94 * gs - 18 * bs + 512) >> 10) + 128
    return y.astype(np.uint8), np.clip(u, 0, 255).astype(np.uint8), np.clip(v, 0, 255).astype(np.uint8)


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool = False) -> np.ndarray:
    """BT.601 planes (chroma at half resolution, rounded up for odd sizes) → RGB (H, W, 3) uint8.

    ``full_range`` selects JPEG-range (yuvj) coefficients.
    """
    h, w = y.shape
    if not full_range and h % 2 == 0 and w % 2 == 0:
        i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, w)
        return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    return yuv420_to_rgb_numpy(y, u, v, full_range)


def yuv420_to_rgb_numpy(y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool = False) -> np.ndarray:
    """The numpy version of :func:`yuv420_to_rgb`: any size, limited or full range; chroma upsampled by repetition."""
    h, w = y.shape
    uu = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)[:h, :w].astype(np.int32) - 128
    vv = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)[:h, :w].astype(np.int32) - 128
    if full_range:
        c = y.astype(np.int32) * 256
        r = c + 359 * vv
        g = c - 88 * uu - 183 * vv
        b = c + 454 * uu
    else:
        c = (y.astype(np.int32) - 16) * 298
        r = c + 409 * vv
        g = c - 100 * uu - 208 * vv
        b = c + 516 * uu
    out = np.empty((h, w, 3), np.uint8)
    for i, channel in enumerate((r, g, b)):
        out[..., i] = np.clip((channel + 128) >> 8, 0, 255)
    return out
