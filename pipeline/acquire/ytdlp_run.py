"""One yt-dlp attempt, run in a child process so that the parent can enforce a hard wall-time and size cap.

A read timeout bounds one ``recv``, not a download: a server trickling a few bytes a second, or sending its headers
that slowly, never trips it. Only killing the attempt does, and a thread cannot be killed, so each attempt is a
process (``python -m pipeline.acquire.ytdlp_run <parent pid>``) that reads a JSON job on stdin and writes a JSON
result to ``job["result"]``. This module imports only yt-dlp and the standard library, to start fast.

An attempt never outlives the worker that started it: it runs in the stage's process group (a kill of the stage
reaches it), and it asks the kernel for SIGKILL when its parent dies, then checks that the parent is still the one
that started it (one that died before the request was made can no longer send it).

Errors are classified from yt-dlp's exception chain (HTTP status, exception type) first; the message is a fallback,
and only after the URL and video id are cut out of it, so a URL containing "cookies" or "private" classifies nothing.
"""

from __future__ import annotations

import ctypes
import email.utils
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["classify_exception", "classify_message", "retry_after_seconds", "TRANSIENT", "main"]

#: Classes worth another attempt after a pause; every other failure is final for this run.
TRANSIENT = frozenset({"rate_limited", "server_error", "timeout", "truncated", "network_error"})

#: Message fallback, (pattern, status) in priority order; matched against text with URLs and ids removed.
_MESSAGE_CLASSES: tuple[tuple[str, str], ...] = (
    (r"sign in to confirm|use --cookies|login required|members-only|age-restricted", "needs_auth"),
    (r"private video|video is private", "private"),
    (r"available in your country|geo.?restrict", "geo"),
    (r"http error 429|too many requests", "rate_limited"),
    (r"http error 403|forbidden", "forbidden"),
    (r"http error 5\d\d", "server_error"),
    (r"larger than max-filesize", "too_large"),
    (r"unsupported url", "unsupported"),
    (r"video unavailable|has been removed|http error 40[45]|no such file|does not exist|not available", "unavailable"),
    (r"timed out|timeout", "timeout"),
    (r"bytes read|content too short|incomplete read|did not get any data", "truncated"),
    (r"connection|network|name resolution|unreachable|refused", "network_error"),
)

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*:(?://)?\S+", re.IGNORECASE)


def classify_message(message: str, *literals: str) -> str:
    """Map a yt-dlp message to a status class, ignoring URLs and the given literals (the URL, the video id)."""
    text = message
    for literal in sorted(filter(None, literals), key=len, reverse=True):  # whole tokens only: an id may be "t"
        text = re.sub(rf"(?<![\w.-]){re.escape(literal)}(?![\w.-])", " ", text)
    text = _URL.sub(" ", text).lower()
    for pattern, status in _MESSAGE_CLASSES:
        if re.search(pattern, text):
            return status
    return "download_error"


def _chain(err: BaseException) -> list[BaseException]:
    """Every exception behind ``err``: yt-dlp keeps causes in ``exc_info`` and ``cause`` besides ``__cause__``."""
    seen: list[BaseException] = []
    todo: list[Any] = [err]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        exc_info = getattr(item, "exc_info", None)
        todo += [exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
                 getattr(item, "cause", None), item.__cause__, item.__context__]
    return seen


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_exception(err: BaseException) -> tuple[str | None, int | None, float | None]:
    """``(status, http_status, retry_after)`` from the exception types in ``err``'s chain (status ``None``: unknown)."""
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError
    from yt_dlp.utils import ContentTooShortError, GeoRestrictedError, UnsupportedError

    chain = _chain(err)
    for item in chain:
        if isinstance(item, HTTPError):
            code = item.status
            retry_after = retry_after_seconds(item.response.headers.get("Retry-After")) if code in (429, 503) else None
            if code == 429:
                return "rate_limited", code, retry_after
            if code in (401, 407):
                return "needs_auth", code, None
            if code == 403:
                return "forbidden", code, None
            if code in (404, 410):
                return "unavailable", code, None
            if code >= 500:
                return "server_error", code, retry_after
            return "download_error", code, None
    for item in chain:
        if isinstance(item, GeoRestrictedError):
            return "geo", None, None
        if isinstance(item, (ContentTooShortError, IncompleteRead)):
            return "truncated", None, None
        if isinstance(item, UnsupportedError):
            return "unsupported", None, None
        if isinstance(item, (TimeoutError, socket.timeout)):
            return "timeout", None, None
        if isinstance(item, FileNotFoundError):
            return "unavailable", None, None
    for item in chain:
        if isinstance(item, (TransportError, ConnectionError)):
            return "network_error", None, None
    return None, None, None


class _Logger:
    """Route yt-dlp's output into a list; keep the last error line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.last_error = ""

    def debug(self, msg: str) -> None:
        self.lines.append(msg)

    info = warning = debug

    def error(self, msg: str) -> None:
        self.lines.append(msg)
        self.last_error = msg


#: yt-dlp info fields kept in the downloads manifest, and those that identify what was fetched (id, format, size).
INFO_FIELDS = ("extractor_key", "id", "format_id", "filesize", "filesize_approx", "width", "height", "fps", "vcodec",
               "license", "uploader", "upload_date", "title", "webpage_url")


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt of ``job``; return the result (never raises for a failed download)."""
    import yt_dlp

    logger = _Logger()
    filtered: list[str] = []
    licenses = job.get("licenses")

    def licence_filter(info: dict[str, Any], *, incomplete: bool = False) -> str | None:
        if licenses is None or incomplete:
            return None
        if info.get("license") not in licenses:
            filtered.append(f"license {info.get('license')!r} is not one of {sorted(licenses)}")
            return filtered[-1]
        return None

    opts: dict[str, Any] = {
        "format": job["format"],
        "outtmpl": {"default": str(Path(job["staging"]) / "media.%(ext)s")},
        "retries": 0,  # the parent retries whole attempts, with backoff, under one wall-time cap
        "fragment_retries": job["retries"],
        "extractor_retries": 0,
        "socket_timeout": job["timeout"],
        "noplaylist": True,
        "noprogress": True,
        "quiet": True,
        "no_warnings": False,
        "logger": logger,
        "overwrites": False,
        "continuedl": True,  # a retry resumes the .part file where the server allows it
        "enable_file_urls": job["allow_file_urls"],
        "sleep_interval": job["sleep_interval"] or None,
        "max_sleep_interval": job["max_sleep_interval"] or None,
        "ratelimit": job["ratelimit"],
        "cookiefile": job["cookiefile"],
        "max_filesize": job["max_bytes"],
        "match_filter": licence_filter,
    }
    opts = {k: v for k, v in opts.items() if v is not None}
    result: dict[str, Any] = {"ytdlp_version": yt_dlp.version.__version__}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            # a probe (job["probe"]) reads the metadata only: what the source is now, to compare with a record
            info = ydl.sanitize_info(ydl.extract_info(job["url"], download=not job.get("probe")))
        result["info"] = {k: info.get(k) for k in INFO_FIELDS}
        if job.get("probe"):
            return {**result, "status": "ok"}
        if filtered:
            return {**result, "status": "licence_filtered", "message": filtered[-1]}
        downloads = info.get("requested_downloads") or [{}]
        path = downloads[0].get("filepath") or info.get("filepath")
        if path and Path(path).is_file():
            return {**result, "status": "ok", "path": path}
        too_large = [line for line in logger.lines if "max-filesize" in line]
        if too_large:
            return {**result, "status": "too_large", "message": too_large[-1].strip().removeprefix("[download] ")}
        return {**result, "status": "download_error",
                "message": f"yt-dlp reported success but wrote no file: {' '.join(logger.lines[-3:])}"}
    except yt_dlp.utils.YoutubeDLError as err:
        message = (str(err) or logger.last_error or type(err).__name__).strip()
        status, code, retry_after = classify_exception(err)
        status = status or classify_message(message, job["url"], job["source_url"], job["video_id"])
        return {**result, "status": status, "message": message, "http_status": code, "retry_after": retry_after}


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if ``parent`` already has.

    The request is made here, after the interpreter started: a parent killed before this line is caught by the
    ``getppid()`` check (an orphan is re-parented to init or a subreaper). The kernel sends the signal when the parent
    *thread* that forked us exits, so the parent waits for the attempt on that thread
    (:func:`pipeline.acquire.download._attempt`).
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not Linux/glibc: the parent's own kill at its deadline still applies
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the stage is gone: nothing may be written for it


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    _die_with_parent(int(args[0]) if args else None)
    job = json.loads(sys.stdin.read())
    result = run(job)
    tmp = Path(job["result"] + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, job["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
