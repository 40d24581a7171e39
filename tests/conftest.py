"""Shared fixtures: real media built on the fly (PyAV), real face photos from installed packages."""

from __future__ import annotations

from pathlib import Path

from pipeline.kernels import pin_kernels

pin_kernels()  # before numpy and torch load: tests compute at the SIMD level the stages and their workers use

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline.video import VideoWriter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def ramp_video(path: Path, n_frames: int, fps: int = 25, size: tuple[int, int] = (64, 48)) -> Path:
    """A video whose frame k is a flat colour encoding k (red: 16·(k mod 16), green: 16·(k div 16)), k < 256."""
    w, h = size
    with VideoWriter(path, fps=fps, crf=0) as out:
        for k in range(n_frames):
            out.write(np.full((h, w, 3), (16 * (k % 16), 16 * (k // 16), 128), np.uint8))
    return path


def frame_index(rgb: np.ndarray) -> int:
    """Invert :func:`ramp_video`'s encoding; colour-conversion error of a few levels is rounded away."""
    red, green = (float(rgb[..., c].mean()) for c in (0, 1))
    return int(round(red / 16)) + 16 * int(round(green / 16))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()
