"""Downloading source videos with the yt-dlp Python API.

The whole video is downloaded (never a time section: section cuts snap to keyframes and are not frame-exact); the
trim stage cuts by decoded frame index. Every attempt, success or failure, yields one ``downloads`` row with the
real yt-dlp message and a status class. A finished download leaves ``<id>.json`` beside the file, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import av
import yt_dlp

from pipeline.manifest import atomic_path, sha256_file
from pipeline.params import DownloadParams
from pipeline.sources import SourceRow, check_url, safe_video_id
from pipeline.video import probe

__all__ = ["download_video", "classify_error", "resolve_url"]

log = logging.getLogger(__name__)

#: (pattern, status) in priority order; the first match wins. Taxonomy from comparable pipelines.
_ERROR_CLASSES: tuple[tuple[str, str], ...] = (
    (r"sign in to confirm|cookies|login required|members-only", "needs_auth"),
    (r"private video|is private", "private"),
    (r"available in your country|geo.?restrict", "geo"),
    (r"http error 429|too many requests", "rate_limited"),
    (r"http error 403|forbidden", "forbidden"),
    (r"video unavailable|has been removed|http error 404|not found|no such file|does not exist|unsupported url",
     "unavailable"),
    (r"timed out|connection|network|name resolution|unreachable|refused", "network_error"),
)


def classify_error(message: str) -> str:
    """Map a yt-dlp error message to a status class (``download_error`` when nothing matches)."""
    lowered = message.lower()
    for pattern, status in _ERROR_CLASSES:
        if re.search(pattern, lowered):
            return status
    return "download_error"


def resolve_url(url: str, root: Path) -> str:
    """Turn a project-relative ``file:`` URL (``file:data/demo/raw/x.mp4``) into an absolute ``file://`` URL."""
    if url.startswith("file:") and not url.startswith("file://"):
        return (root / url[len("file:"):]).resolve().as_uri()
    return url


class _Logger:
    """Route yt-dlp's messages into logging and keep the last error text."""

    def __init__(self, video_id: str) -> None:
        self.video_id, self.last_error = video_id, ""

    def debug(self, msg: str) -> None:
        log.debug("%s: %s", self.video_id, msg)

    def info(self, msg: str) -> None:
        log.debug("%s: %s", self.video_id, msg)

    def warning(self, msg: str) -> None:
        log.info("%s: %s", self.video_id, msg)

    def error(self, msg: str) -> None:
        self.last_error = msg


def _options(params: DownloadParams, out_dir: Path, video_id: str, logger: _Logger) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "format": params.format,
        "outtmpl": {"default": str(out_dir / f"{video_id}.%(ext)s")},
        "retries": params.retries,
        "fragment_retries": params.retries,
        "extractor_retries": params.retries,
        "socket_timeout": params.timeout,
        "noplaylist": True,
        "noprogress": True,
        "quiet": True,
        "no_warnings": True,
        "logger": logger,
        "overwrites": True,
        "enable_file_urls": params.allow_file_urls,
        "sleep_interval": params.sleep_interval or None,
        "max_sleep_interval": params.max_sleep_interval or None,
        "ratelimit": params.ratelimit,
        "cookiefile": params.cookiefile,
    }
    return {k: v for k, v in opts.items() if v is not None}


def _cleanup_partials(out_dir: Path, video_id: str) -> None:
    for leftover in list(out_dir.glob(f"{video_id}.*.part*")) + list(out_dir.glob(f"{video_id}.part*")):
        leftover.unlink(missing_ok=True)


def download_video(source: SourceRow, out_dir: Path, params: DownloadParams, root: Path) -> dict[str, Any]:
    """Download one source video; return its ``downloads`` row. Never raises for a bad video.

    A previous success (``<id>.json`` whose file still exists with the recorded size) is reused.
    """
    video_id = safe_video_id(source.video_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / f"{video_id}.json"
    if record.is_file():
        done = json.loads(record.read_text())
        previous = out_dir / done.get("path", "")
        if done.get("status") == "ok" and previous.is_file() and previous.stat().st_size == done["bytes"]:
            return {**done, "path": str(previous)}
    row: dict[str, Any] = {"video_id": video_id, "url": source.url, "ytdlp_version": yt_dlp.version.__version__}
    started = time.monotonic()
    logger = _Logger(video_id)
    try:
        url = resolve_url(check_url(source.url, params.allow_file_urls), root)
        with yt_dlp.YoutubeDL(_options(params, out_dir, video_id, logger)) as ydl:
            info = ydl.sanitize_info(ydl.extract_info(url, download=True))
        downloads = info.get("requested_downloads") or [{}]
        path = Path(downloads[0].get("filepath") or info.get("filepath") or "")
        if not path.is_file():
            raise yt_dlp.utils.DownloadError(f"yt-dlp reported success but no file exists at {path}")
        row.update(
            status="ok", error=None, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
            extractor=info.get("extractor_key") or info.get("extractor"), format_id=str(info.get("format_id")),
            width=info.get("width"), height=info.get("height"), fps=info.get("fps"), vcodec=info.get("vcodec"),
        )
        if not row["width"] or not row["fps"]:  # direct links carry no format metadata: read the file itself
            stream = probe(path)
            row.update(width=stream.width, height=stream.height, fps=stream.fps, vcodec=stream.codec)
    except (yt_dlp.utils.YoutubeDLError, av.error.FFmpegError, ValueError, OSError) as err:
        message = str(err) or logger.last_error or type(err).__name__
        row.update(status=classify_error(message), error=message.strip()[:2000], path=None)
        _cleanup_partials(out_dir, video_id)
        log.warning("%s: download failed (%s): %s", video_id, row["status"], row["error"])
    row["seconds"] = round(time.monotonic() - started, 3)
    if row["status"] == "ok":
        with atomic_path(record) as tmp:  # the file name only: the folder may move with the project
            tmp.write_text(json.dumps({**row, "path": Path(row["path"]).name}, indent=1))
    return row
