"""Frame-exact trimming with PyAV: keep decoded frames ``start_frame..end_frame`` (inclusive) and re-encode them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import av

from pipeline.params import TrimParams
from pipeline.sources import safe_video_id
from pipeline.video import VideoWriter, iter_frames, probe

__all__ = ["trim_clip"]

log = logging.getLogger(__name__)


def trim_clip(video_id: str, source_path: str | Path, start: int, end: int, out_dir: Path,
              params: TrimParams) -> dict[str, Any]:
    """Cut one clip; return its ``clips`` row. Never raises for a bad video.

    The clip's frame ``k`` is the source's decoded frame ``start + k``; the source PTS of every kept frame is
    recorded so the mapping can be audited later.
    """
    video_id = safe_video_id(video_id)
    started = time.monotonic()
    row: dict[str, Any] = {"video_id": video_id, "start_frame": start, "end_frame": end}
    target = out_dir / f"{video_id}.mp4"
    try:
        info = probe(source_path)
        pts: list[int] = []
        with VideoWriter(target, fps=info.fps, codec=params.codec, crf=params.crf, preset=params.preset) as out:
            for frame in iter_frames(source_path, start, end + 1):
                out.write(frame.rgb)
                pts.append(frame.pts if frame.pts is not None else -1)
            if len(pts) != end - start + 1:
                available = start + len(pts)
                raise ValueError(f"source has {available} decoded frames; window {start}..{end} needs {end + 1}")
        row.update(status="ok", error=None, path=str(target), n_frames=len(pts), fps=info.fps, width=info.width,
                   height=info.height, source_time_base=info.time_base, source_pts=pts)
    except (av.error.FFmpegError, OSError, IndexError) as err:  # before ValueError: some FFmpeg errors subclass it
        row.update(status="decode_error", error=f"{source_path}: {type(err).__name__}: {err}")
    except ValueError as err:
        row.update(status="bad_window", error=f"{source_path}: {err}")
    if row["status"] != "ok":
        log.warning("%s: trim failed: %s", video_id, row["error"])
    row["seconds"] = round(time.monotonic() - started, 3)
    return row
