"""Video I/O with PyAV: frames by decoded index, probing, and H.264 writing.

Frame indices here are always ordinals of decoded frames (never ``CAP_PROP_FRAME_COUNT`` or time arithmetic), so a
window ``[start, end]`` selects exactly the frames the official WFLW-V lists mean.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.manifest import atomic_path

__all__ = ["VideoInfo", "DecodedFrame", "probe", "iter_frames", "read_frames", "VideoWriter"]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's first video stream declares."""

    width: int
    height: int
    fps: float
    codec: str
    time_base: str


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: its ordinal, presentation timestamp and RGB pixels (H, W, 3) uint8."""

    index: int
    pts: int | None
    rgb: np.ndarray


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read stream properties without decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        return VideoInfo(stream.width, stream.height, float(rate), stream.codec_context.name, str(stream.time_base))


def iter_frames(path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> Iterator[DecodedFrame]:
    """Yield decoded frames with ordinal ``start <= index < stop`` (decoding from the first frame)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                break
            if index >= start:
                yield DecodedFrame(index, frame.pts, frame.to_ndarray(format="rgb24"))


def read_frames(path: str | os.PathLike[str], indices: Iterable[int] | None = None) -> np.ndarray:
    """Return frames as an array (N, H, W, 3); all of them, or those at the given ordinals."""
    wanted = None if indices is None else set(indices)
    stop = None if wanted is None else max(wanted, default=-1) + 1
    frames = [f.rgb for f in iter_frames(path, 0, stop) if wanted is None or f.index in wanted]
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


class VideoWriter:
    """Write RGB frames to an H.264 MP4 atomically (the file appears only when closed without error).

    Example:
        >>> with VideoWriter("clip.mp4", fps=30) as out:  # doctest: +SKIP
        ...     out.write(frame_rgb)
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str = "libx264", crf: int = 12,
                 preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec, self.crf, self.preset = codec, crf, preset
        self.count = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        self._stream = None
        return self

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (H, W, 3) uint8; H and W must be even for yuv420p."""
        if self._stream is None:
            stream = self._container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = rgb.shape[1], rgb.shape[0]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream = stream
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._stream is not None and exc_type is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._atomic.__exit__(exc_type, exc, tb)
