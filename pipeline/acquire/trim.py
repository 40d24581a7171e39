"""Frame-exact trimming with PyAV: keep decoded frames ``start_frame..end_frame`` (inclusive) and re-encode them.

The window is found through a PTS index of the source (:func:`pipeline.video.index_frames`): decoding starts at the
keyframe before the window, so the cost follows the window, not its position in the video. A source that cannot be
indexed, or whose decoding disagrees with its index, is decoded sequentially from frame 0 instead, and the row says
so (``decode_mode``, ``decode_note``). Either way clip frame ``k`` is the source's decoded frame ``start + k``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.acquire.files import OutputError
from pipeline.params import TrimParams
from pipeline.runcache import failure_status
from pipeline.sources import safe_video_id
from pipeline.video import (
    DecodedFrame,
    FrameIndex,
    IndexUnavailable,
    NoVideoStream,
    SeekMismatch,
    VideoWriter,
    index_frames,
    iter_frames,
    probe,
)

__all__ = ["trim_clip", "pad_even"]

log = logging.getLogger(__name__)


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """Pad an odd width or height by one replicated column/row at the right/bottom (yuv420p needs even sizes).

    Padding keeps every source pixel at its coordinates, so boxes and landmarks need no shift.
    """
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _SourceFault(Exception):
    """Carries an error raised while decoding the source through the writer, so it is not taken for an output fault."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _source(frames: Iterator[DecodedFrame]) -> Iterator[DecodedFrame]:
    try:
        yield from frames
    except Exception as err:  # noqa: BLE001 - re-raised as is by _write, only marked as the source's
        raise _SourceFault(err) from err


def _write(target: Path, frames: Iterator[DecodedFrame], fps: float, params: TrimParams) -> list[int]:
    """Encode the frames to ``target`` (atomically) and return their source PTS.

    Raises:
        OutputError: the clip cannot be written (its folder cannot be created, no permission, disk full).
        Anything decoding the source raises, unchanged.
    """
    pts: list[int] = []
    try:
        with VideoWriter(target, fps=fps, codec=params.codec, crf=params.crf, preset=params.preset) as out:
            for frame in _source(frames):
                out.write(pad_even(frame.rgb))
                pts.append(frame.pts if frame.pts is not None else -1)
    except _SourceFault as fault:
        raise fault.error from None
    except OSError as err:  # only the writer is left: creating, writing, closing or renaming the clip
        where = err.filename or target
        raise OutputError(f"{where}: cannot write clip {target.name}: {err.strerror or err}") from None
    return pts


def trim_clip(video_id: str, source_path: str | Path, start: int, end: int, out_dir: Path,
              params: TrimParams) -> dict[str, Any]:
    """Cut one clip; return its ``clips`` row. Never raises for a bad video or id.

    The source PTS of every kept frame is recorded so the mapping can be audited later.

    Raises:
        OutputError: the clip cannot be written (an output-side fault, never the video's status).
    """
    started = time.monotonic()
    row: dict[str, Any] = {"video_id": video_id, "start_frame": start, "end_frame": end}
    try:
        target = out_dir / f"{safe_video_id(video_id)}.mp4"
    except ValueError as err:  # a hand-edited manifest: the id must never become a path
        log.warning("%s", err)
        return {**row, "status": "error", "error": str(err), "seconds": round(time.monotonic() - started, 3)}
    try:
        info = probe(source_path)
        index: FrameIndex | None = None
        mode: str = "sequential"
        note: str | None = "trim.seek is off"
        if params.seek:
            try:
                index = index_frames(source_path)
            except IndexUnavailable as err:
                note = f"not indexable: {err}"
        if index is not None and end >= len(index):
            raise ValueError(f"source has {len(index)} frames (indexed); window {start}..{end} needs {end + 1}")
        pts: list[int] = []
        if index is not None:
            try:
                pts = _write(target, iter_frames(source_path, start, end + 1, index=index), info.fps, params)
                mode, note = "seek", None
            except SeekMismatch as err:  # the partial clip was discarded by the writer
                index, note = None, f"seek disagreed with the index: {err}"
                log.warning("%s: %s; decoding sequentially", video_id, note)
        if index is None:
            pts = _write(target, iter_frames(source_path, start, end + 1), info.fps, params)
        if len(pts) != end - start + 1:
            target.unlink(missing_ok=True)
            raise ValueError(f"source has {start + len(pts)} decoded frames; window {start}..{end} needs {end + 1}")
        row.update(status="ok", error=None, path=str(target), n_frames=len(pts), fps=info.fps,
                   width=info.width + info.width % 2, height=info.height + info.height % 2,
                   source_width=info.width, source_height=info.height, source_time_base=info.time_base,
                   source_pts=pts, decode_mode=mode, decode_note=note)
    except NoVideoStream as err:
        row.update(status="no_video_stream", error=str(err))
    except (av.error.FFmpegError, OSError, IndexError, MemoryError) as err:  # before ValueError: some FFmpeg errors
        # subclass it. Media FFmpeg rejects is a fact of the video; EIO, EMFILE, a vanished file are this run's
        row.update(failure_status(err, source_path))
    except ValueError as err:
        row.update(status="bad_window", error=f"{source_path}: {err}")
    if row["status"] != "ok":
        log.warning("%s: trim failed: %s", video_id, row["error"])
    row["seconds"] = round(time.monotonic() - started, 3)
    return row
