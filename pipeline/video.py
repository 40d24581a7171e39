"""Video I/O with PyAV: frames by decoded index, probing, seeking through a PTS index, and H.264 writing.

Frame indices here are always ordinals of decoded frames (never ``CAP_PROP_FRAME_COUNT`` or time arithmetic), so a
window ``[start, end]`` selects exactly the frames the official WFLW-V lists mean.

Seeking (:func:`index_frames`, then :func:`iter_frames` with ``index=``): demuxing every packet without decoding gives
each frame's PTS; sorted, the PTS list *is* the decoded-frame order, so frame ``k`` is the frame whose PTS is the
``k``-th smallest. A window is then decoded from the keyframe before it, and every decoded frame is identified by its
PTS, never by counting from the seek point: leading pictures of an open GOP (dropped or broken after a seek) fall
before the keyframe and are skipped. Any disagreement between decoder and index raises :class:`SeekMismatch`, and
callers decode sequentially instead.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.colour import rgb_to_yuv420, yuv420_to_rgb
from pipeline.manifest import atomic_path

__all__ = [
    "VideoInfo", "DecodedFrame", "FrameIndex", "NoVideoStream", "IndexUnavailable", "SeekMismatch", "probe",
    "index_frames", "iter_frames", "read_frames", "VideoWriter", "frame_rgb",
]


class NoVideoStream(ValueError):
    """The file opens as media but has no video stream (an audio-only download, for instance)."""


class IndexUnavailable(ValueError):
    """The stream's packets cannot give a reliable frame index; the message says why."""


class SeekMismatch(ValueError):
    """Decoding after a seek disagreed with the frame index; the frames yielded before it were correct."""


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


@dataclass(frozen=True)
class FrameIndex:
    """Every frame of a video stream from its packets: ``pts[k]`` is the PTS of decoded frame ``k``.

    ``keyframes`` are the ordinals of the sync frames (where decoding may start), ascending.
    """

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    time_base: str
    _ordinal: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ordinal", {p: k for k, p in enumerate(self.pts)})

    def __len__(self) -> int:
        return len(self.pts)

    def ordinal(self, pts: int) -> int | None:
        """The decoded-frame ordinal of a PTS, or ``None`` if no packet has it."""
        return self._ordinal.get(pts)

    def keyframe_before(self, frame: int) -> int:
        """The ordinal of the last keyframe at or before ``frame``."""
        return self.keyframes[max(bisect.bisect_right(self.keyframes, frame) - 1, 0)]


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike[str]) -> av.video.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise NoVideoStream(f"{path}: no video stream (streams: {kinds})")
    return container.streams.video[0]


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read stream properties without decoding; raise :class:`NoVideoStream` for files without video."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        return VideoInfo(stream.width, stream.height, float(rate), stream.codec_context.name, str(stream.time_base))


def index_frames(path: str | os.PathLike[str]) -> FrameIndex:
    """Index a video's frames from its packets (demuxing only: no decoding).

    Raises :class:`IndexUnavailable` when the packets cannot stand for the decoded frames: a packet without PTS
    (raw elementary streams), duplicate PTS, corrupt packets, or a stream that does not start with a keyframe
    preceding every other frame (a decoder would drop the frames before it, so ordinals would shift).
    """
    pts: list[int] = []
    key_pts: list[int] = []
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        time_base = str(stream.time_base)
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # the demuxer's end marker; edit-list samples never shown
                continue
            if packet.pts is None:
                raise IndexUnavailable(f"packet {len(pts)} (in decode order) has no PTS")
            if packet.is_corrupt:
                raise IndexUnavailable(f"packet with PTS {packet.pts} is flagged corrupt")
            if not pts and not packet.is_keyframe:
                raise IndexUnavailable("the first packet is not a keyframe")
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
    if not pts:
        raise IndexUnavailable("the video stream has no packets")
    ordered = sorted(pts)
    if len(set(ordered)) != len(ordered):
        raise IndexUnavailable("two packets share a PTS")
    if ordered[0] != pts[0]:
        raise IndexUnavailable("frames precede the first keyframe (open GOP at the start)")
    index = FrameIndex(tuple(ordered), (), time_base)
    ordinals = [index.ordinal(p) for p in key_pts]
    keyframes = tuple(sorted(o for o in ordinals if o is not None))
    return FrameIndex(index.pts, keyframes, time_base)


def iter_frames(path: str | os.PathLike[str], start: int = 0, stop: int | None = None,
                index: FrameIndex | None = None) -> Iterator[DecodedFrame]:
    """Yield decoded frames with ordinal ``start <= index < stop``.

    Without ``index`` this decodes from the first frame and counts. With one (from :func:`index_frames`) it seeks to
    the keyframe before ``start`` and identifies frames by PTS; it raises :class:`SeekMismatch` if the decoder
    disagrees with the index (the caller should then decode without an index).
    """
    if index is not None:
        yield from _iter_indexed(path, start, len(index) if stop is None else min(stop, len(index)), index)
        return
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for ordinal, frame in enumerate(container.decode(stream)):
            if stop is not None and ordinal >= stop:
                break
            if ordinal >= start:
                yield DecodedFrame(ordinal, frame.pts, frame_rgb(frame))


_AVCOL_RANGE_JPEG = 2  # FFmpeg's AVCOL_RANGE_JPEG: full-range YUV


def frame_rgb(frame: av.VideoFrame, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A decoded frame (or its rectangle ``region = (x0, y0, x1, y1)``, clipped to the frame) as RGB uint8.

    8-bit 4:2:0 (what H.264/VP9/AV1 sources almost always are) is converted with exact integer arithmetic
    (:mod:`pipeline.colour`), identical on every CPU; swscale, used for other layouts, picks SIMD kernels per CPU
    that round differently. A region is converted from the enclosing even-aligned rectangle of the frame's own planes,
    so its pixels are exactly those of the full-frame conversion, for a fraction of the work.
    """
    x0, y0, x1, y1 = region if region is not None else (0, 0, frame.width, frame.height)
    name = frame.format.name
    if name not in ("yuv420p", "yuvj420p"):
        return frame.to_ndarray(format="rgb24")[y0:y1, x0:x1]
    planes = [np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
              for p in frame.planes]
    # even corners on both sides keep chroma sited as in the full frame and the size on the same conversion path
    # (pipeline.colour converts even sizes with OpenCV and odd ones with numpy, which round differently)
    ex0, ey0 = x0 - x0 % 2, y0 - y0 % 2
    ex1 = min(x1 + x1 % 2, frame.width) if frame.width % 2 == 0 else frame.width
    ey1 = min(y1 + y1 % 2, frame.height) if frame.height % 2 == 0 else frame.height
    if frame.width % 2 or frame.height % 2:
        ex0, ey0 = 0, 0  # odd frames go through the numpy path whole, as the full-frame conversion does
    y = planes[0][ey0:ey1, ex0:ex1]
    u = planes[1][ey0 // 2:(ey1 + 1) // 2, ex0 // 2:(ex1 + 1) // 2]
    v = planes[2][ey0 // 2:(ey1 + 1) // 2, ex0 // 2:(ex1 + 1) // 2]
    rgb = yuv420_to_rgb(y, u, v, full_range=name == "yuvj420p" or frame.color_range == _AVCOL_RANGE_JPEG)
    return rgb[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]


#: How many earlier keyframes to try when a seek lands after the wanted frame.
_SEEK_RETRIES = 2


def _iter_indexed(path: str | os.PathLike[str], start: int, stop: int, index: FrameIndex) -> Iterator[DecodedFrame]:
    if start >= stop:
        return
    key = index.keyframe_before(start)
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for attempt in range(_SEEK_RETRIES + 1):
            if key > 0:  # frame 0 needs no seek: decoding starts there
                container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            elif attempt:
                container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
            expected = start
            for frame in container.decode(stream):
                ordinal = None if frame.pts is None else index.ordinal(frame.pts)
                if ordinal is None:
                    raise SeekMismatch(f"decoded a frame with PTS {frame.pts}, which no packet has")
                if expected == start and ordinal < start:
                    continue  # between the keyframe and the window, or a leading picture of an open GOP
                if ordinal != expected:
                    if expected == start:
                        break  # the seek landed after the window start: try an earlier keyframe
                    raise SeekMismatch(f"expected frame {expected} (PTS {index.pts[expected]}), decoded {ordinal}")
                if frame.is_corrupt:
                    raise SeekMismatch(f"frame {ordinal} decoded as corrupt after the seek")
                yield DecodedFrame(ordinal, frame.pts, frame_rgb(frame))
                expected += 1
                if expected >= stop:
                    return
            else:
                raise SeekMismatch(f"decoding ended at frame {expected}; the index has {len(index)} frames")
            key = index.keyframes[max(index.keyframes.index(key) - 1, 0)]
    raise SeekMismatch(f"no seek reached frame {start} within {_SEEK_RETRIES + 1} keyframes")


def read_frames(path: str | os.PathLike[str], indices: Iterable[int] | None = None) -> np.ndarray:
    """Return frames as an array (N, H, W, 3); all of them, or those at the given ordinals."""
    wanted = None if indices is None else set(indices)
    stop = None if wanted is None else max(wanted, default=-1) + 1
    frames = [f.rgb for f in iter_frames(path, 0, stop) if wanted is None or f.index in wanted]
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


#: x264 options that keep its bitstream the same on every CPU. Its macroblock-tree rate control runs a float kernel
#: (``mbtree_propagate_cost``) whose AVX-512, AVX2 and SSE versions start from approximate reciprocals (rcp14ps,
#: rcpps) and round otherwise: the demo's carphone video got other bytes with x264's SIMD cut to AVX2. Without it,
#: every level from SSSE3 to AVX-512 writes the same bytes; the price is more bits at the same crf.
X264_SAME_ON_EVERY_CPU = "mbtree=0"


class VideoWriter:
    """Write RGB frames to an H.264 MP4 atomically (the file appears only when closed without error).

    ``x264_cpu`` restricts x264's SIMD to a named level (its ``asm`` option, e.g. ``"SSSE3"``); ``None`` uses what
    x264 detects. Tests encode at lower levels to check that the bytes do not depend on the CPU.

    Example:
        >>> with VideoWriter("clip.mp4", fps=30) as out:  # doctest: +SKIP
        ...     out.write(frame_rgb)
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str = "libx264", crf: int = 12,
                 preset: str = "veryfast", x264_cpu: str | None = None) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec, self.crf, self.preset, self.x264_cpu = codec, crf, preset, x264_cpu
        self.count = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        self._stream: av.video.stream.VideoStream | None = None
        return self

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (H, W, 3) uint8; H and W must be even for yuv420p."""
        if self._stream is None:
            stream = self._container.add_stream(self.codec, rate=self.fps)
            assert isinstance(stream, av.video.stream.VideoStream)  # a video codec gives a video stream
            stream.width, stream.height = rgb.shape[1], rgb.shape[0]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            if self.codec == "libx264":
                cpu = f":asm={self.x264_cpu}" if self.x264_cpu else ""
                stream.options = {**stream.options, "x264-params": X264_SAME_ON_EVERY_CPU + cpu}
            # One encoder thread: x264's output depends on its thread count, which defaults to the core count.
            stream.codec_context.thread_count = 1
            self._stream = stream
        # Our own exact RGB → YUV conversion (swscale's SIMD kernels round differently per CPU).
        y, u, v = rgb_to_yuv420(np.ascontiguousarray(rgb))
        planar = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, rgb.shape[1])
        frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
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
