"""Downloading source videos with yt-dlp: attempts with backoff, hard caps, and a record that says what was fetched.

The whole video is downloaded (never a time section: section cuts snap to keyframes and are not frame-exact); the
trim stage cuts by decoded frame index. Per video:

* each attempt runs yt-dlp in a child process (:mod:`pipeline.acquire.ytdlp_run`) inside a private staging folder;
  the parent kills it when the per-video wall time (``max_seconds``, every attempt and wait together) or the size
  cap (``max_bytes``) is passed;
* transient failures (429, 5xx, timeouts, truncated bodies, network errors) are retried after an exponential
  backoff with jitter, never sooner than a ``Retry-After`` header asks;
* the file is checked to hold a decodable video stream before it counts;
* only then is it moved into the download store (``<cache>/downloads``, outside every tracked output) next to a
  record ``<id>.json`` of (id, url, format selector) and of what the source was: a local file's size and SHA-256, an
  HTTP server's validators (ETag, Last-Modified, Content-Length), or the extractor's video id, format id and size. A
  later run reuses it only if the three keys match and the source is still the same (``download.source_check``:
  local files are always checked, remote sources with ``remote``), else it downloads again and says why. Failed and
  partial files never leave the staging folder, which is deleted after every video and at the start of every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import av

from pipeline.acquire import ytdlp_run
from pipeline.acquire.files import staging_dir
from pipeline.acquire.ytdlp_run import TRANSIENT, classify_message
from pipeline.manifest import atomic_path, sha256_file
from pipeline.params import DownloadParams
from pipeline.runcache import cache_lock, file_digest
from pipeline.sources import SourceRow, check_url, local_file, safe_video_id
from pipeline.video import NoVideoStream, iter_frames, probe

__all__ = ["download_video", "classify_message", "resolve_url", "backoff_seconds", "record_matches", "source_changed",
           "store_slot"]

log = logging.getLogger(__name__)

#: The project root, put on the child's PYTHONPATH (it runs ``python -m pipeline.acquire.ytdlp_run``).
_PROJECT = Path(__file__).resolve().parents[2]
_POLL = 0.2  # seconds between the parent's checks of a running attempt
_JITTER = random.SystemRandom()


def resolve_url(url: str, root: Path) -> str:
    """Turn a ``file:`` URL into an absolute ``file://`` URL inside ``root``; other URLs pass unchanged (see
    :func:`pipeline.sources.local_file`: a path outside ``root`` raises ``ValueError``)."""
    target = local_file(url, root)
    return url if target is None else target.as_uri()


def backoff_seconds(retry: int, params: DownloadParams, retry_after: float | None = None) -> float:
    """Wait before retry ``retry`` (1-based): ``backoff·2^(retry-1)`` capped, with ×U(0.5, 1.5) jitter so that
    workers do not retry in step; never less than the server's ``Retry-After``."""
    wait = min(params.backoff_max, params.backoff * 2 ** (retry - 1)) * _JITTER.uniform(0.5, 1.5)
    return max(wait, retry_after or 0.0)


def record_matches(record: dict[str, Any], source: SourceRow, params: DownloadParams) -> bool:
    """Whether a download record is for this (url, format selector); the video id is its file name."""
    return record.get("url") == source.url and record.get("format") == params.format


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill an attempt and every process it started (yt-dlp may run ffmpeg), then reap it.

    The attempt shares the stage's process group, so its tree is read from ``/proc``; it is stopped first, so that it
    cannot start another helper while the tree is listed.
    """
    try:
        os.kill(proc.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we read
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree = [proc.pid]
    for pid in tree:  # grows while it is walked: breadth-first over the descendants
        tree += children.get(pid, [])
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _media_bytes(staging: Path) -> int:
    total = 0
    for p in staging.glob("media*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # yt-dlp renamed media.*.part to its final name between glob and stat
            pass
    return total


def _attempt(job: dict[str, Any], staging: Path, deadline: float, params: DownloadParams) -> dict[str, Any]:
    """Run one yt-dlp attempt in a child process; kill it at the deadline or when its file passes ``max_bytes``.

    Nothing outlives the stage: the child stays in the stage's process group (a kill of the stage reaches it) and
    dies with this worker (:func:`pipeline.acquire.ytdlp_run.main`). The kernel ties that death signal to the thread
    that forks, so this thread waits for the child and kills it on every way out, an exception included.
    """
    result = staging / "result.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT), os.environ.get("PYTHONPATH")]))}
    with (staging / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", ytdlp_run.__name__, str(os.getpid())], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=stderr, cwd=staging, env=env)
        try:
            assert proc.stdin is not None
            try:
                with proc.stdin:
                    proc.stdin.write(json.dumps({**job, "result": str(result)}).encode())
            except BrokenPipeError:
                pass  # the child ended before reading its job: its exit code and stderr say why
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    _kill(proc)
                    return {"status": "timeout", "message": f"killed: the per-video cap of {params.max_seconds:g} "
                                                           f"s (download.max_seconds) was reached"}
                if _media_bytes(staging) > params.max_bytes:
                    _kill(proc)
                    return {"status": "too_large", "message": f"killed: the file passed {params.max_bytes} bytes "
                                                             f"(download.max_bytes)"}
                time.sleep(_POLL)
        finally:
            if proc.returncode is None:
                _kill(proc)
    if not result.is_file():
        tail = (staging / "stderr.txt").read_text(errors="replace").strip().splitlines()[-1:]
        return {"status": "download_error", "message": f"yt-dlp worker exited with code {proc.returncode}: "
                                                      f"{tail[0] if tail else 'no output'}"}
    return json.loads(result.read_text(encoding="utf-8"))


def _check_media(path: Path, max_bytes: int) -> dict[str, Any]:
    """Stream facts of a finished download; raise if it is too large, not media, or holds no decodable video."""
    size = path.stat().st_size
    if size > max_bytes:
        raise _Refused("too_large", f"the file has {size} bytes, over download.max_bytes = {max_bytes}")
    try:
        info = probe(path)
        frames = iter_frames(path, 0, 1)
        first = next(frames, None)
        frames.close()  # type: ignore[attr-defined]  # a generator: closes the container now, before the move
        if first is None:
            raise _Refused("decode_error", "downloaded file has a video stream but no frame decodes")
    except NoVideoStream as err:
        raise _Refused("no_video_stream", f"downloaded file{str(err).removeprefix(str(path))}") from None
    except av.error.FFmpegError as err:
        message = f"downloaded file is not a readable video: {type(err).__name__}: {err.strerror}"
        raise _Refused("decode_error", message) from None
    return {"width": info.width, "height": info.height, "fps": info.fps, "vcodec": info.codec}


class _Refused(Exception):
    """A finished download that must not count; ``status`` is its class."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _make_staging(staging: Path) -> None:
    for _ in range(5):  # another worker may remove the empty parent between our two mkdirs
        try:
            staging.mkdir(parents=True)
            return
        except FileNotFoundError:
            continue
    staging.mkdir(parents=True)


def _media_name(video_id: str, staged: Path) -> str:
    ext = staged.suffix.lower().lstrip(".")
    if not ext.isalnum() or len(ext) > 5 or ext in ("json", "part"):
        ext = "media"  # the record is <id>.json; a media file must never take that name
    return f"{video_id}.{ext}"


def _forget(out_dir: Path, video_id: str, record: dict[str, Any] | None) -> None:
    """Remove a stale record, then its file (in that order: a crash in between leaves no record, so no reuse)."""
    (out_dir / f"{video_id}.json").unlink(missing_ok=True)
    if record and record.get("path") and Path(record["path"]).name == record["path"]:
        (out_dir / record["path"]).unlink(missing_ok=True)


def _reuse(store: Path, video_id: str, source: SourceRow, params: DownloadParams, root: Path, cache: Path
           ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """``(row, record, why_not)``: the row of a finished download that is still this source, else ``None``, any old
    record and why it is not reused (``None`` when there was nothing to reuse)."""
    path = store / f"{video_id}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None, None
    if not isinstance(record, dict):
        return None, None, None
    media = store / str(record.get("path", ""))
    if not (record.get("status") == "ok" and media.is_file() and media.stat().st_size == record.get("bytes")):
        return None, record, "the stored file is incomplete"
    if not record_matches(record, source, params):
        return None, record, "the url or download.format changed"
    changed = source_changed(record, source, params, root, cache)
    if changed:
        return None, record, f"source changed: {changed}"
    row = {k: v for k, v in record.items() if k not in ("format", "source")}
    os.utime(store)  # last use of this stored version, for `python -m pipeline.runcache prune --stage downloads`
    return {**row, "path": str(media)}, record, None


def store_slot(store: Path, source: SourceRow, params: DownloadParams) -> Path:
    """Where one version of a source lives in the download store: ``<store>/<id>/<version>``, the version a hash of
    (url, format selector, content hash of a project file). A source that changes and changes back finds its earlier
    download again; versions no list uses any more are pruned with the cache."""
    version = hashlib.sha256("\n".join([source.url, params.format, source.content_sha256 or ""]).encode())
    return store / safe_video_id(source.video_id) / version.hexdigest()[:16]


def _other_versions(store: Path, slot: Path, video_id: str, source: SourceRow, params: DownloadParams) -> str | None:
    """Why an earlier download of this id is not reused, when the store holds one (another version)."""
    why = None
    for record_path in sorted((store / video_id).glob(f"*/{video_id}.json")):
        if record_path.parent == slot:
            continue
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record_matches(record, source, params):
            return "source changed: its content is not what was downloaded"
        why = "the url or download.format changed"
    return why


def source_changed(record: dict[str, Any], source: SourceRow, params: DownloadParams, root: Path,
                   cache: Path) -> str | None:
    """Why the source is no longer what ``record`` fetched, or None if it still is (as far as
    ``download.source_check`` looks: local files always; remote sources only with ``remote``)."""
    then = record.get("source") or {}
    if params.source_check == "none":
        return None
    if urlparse(source.url).scheme.lower() == "file":
        try:
            now = _local_identity(source, root, cache)
        except (OSError, ValueError) as err:
            return f"cannot read it ({err})"
        return _difference(then, now)
    if params.source_check != "remote":
        return None
    remote = _remote_identity(then, source, params)
    return None if remote is None else _difference(then, remote)


def _difference(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            return f"{key} {then.get(key)!r} -> {now.get(key)!r}"
    return None


def _local_identity(source: SourceRow, root: Path, cache: Path) -> dict[str, Any]:
    """A project file's size and SHA-256 (remembered by size, mtime and inode, so a check costs a stat)."""
    path = local_file(source.url, root)
    assert path is not None  # a file: URL
    return {"kind": "file", "bytes": path.stat().st_size, "sha256": file_digest(path, cache)}


def _http_validators(url: str, timeout: float) -> dict[str, Any] | None:
    """The validators an HTTP(S) server gives for ``url`` (HEAD: ETag, Last-Modified, Content-Length), or None
    when the server cannot be asked (then nothing is concluded)."""
    if urlparse(url).scheme.lower() not in ("http", "https"):
        return None
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "wflwv-pipeline"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, above
            headers = response.headers
    except (OSError, ValueError) as err:
        log.info("%s: HEAD failed (%s); the source is not checked", url, err)
        return None
    return {"kind": "http", "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified"),
            "content_length": headers.get("Content-Length")}


def _extractor_identity(info: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "extractor", "extractor": info.get("extractor_key"), "id": info.get("id"),
            "format_id": None if info.get("format_id") is None else str(info["format_id"]),
            "filesize": info.get("filesize") or info.get("filesize_approx")}


def _remote_identity(then: dict[str, Any], source: SourceRow, params: DownloadParams) -> dict[str, Any] | None:
    """What a remote source is now, asked the way ``then`` was recorded (None: could not ask)."""
    if then.get("kind") == "http":
        return _http_validators(source.url, params.timeout)
    if then.get("kind") != "extractor":
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="probe-") as folder:
        job = {**_job(source, source.url, Path(folder), params, None), "probe": True}
        result = _attempt(job, Path(folder), time.monotonic() + params.max_seconds, params)
    if result.get("status") != "ok":
        log.info("%s: metadata probe failed (%s); the source is not checked", source.video_id, result.get("status"))
        return None
    return _extractor_identity(result.get("info") or {})


def _source_identity(source: SourceRow, url: str, info: dict[str, Any], params: DownloadParams, root: Path,
                     cache: Path) -> dict[str, Any]:
    """What was fetched, recorded to decide later reuse: a local file's content, an HTTP server's validators or the
    extractor's video id, format and size."""
    if urlparse(source.url).scheme.lower() == "file":
        return _local_identity(source, root, cache)
    if info.get("extractor_key") in (None, "Generic"):  # a plain file on a web server
        return _http_validators(url, params.timeout) or {"kind": "http"}
    return _extractor_identity(info)


def _licence_row(row: dict[str, Any], params: DownloadParams) -> dict[str, Any]:
    """Apply ``download.licenses`` to a finished download (the file stays: only the row says it is left out)."""
    if params.licenses is not None and row.get("license") not in params.licenses:
        return {**row, "status": "licence_filtered",
                "error": f"license {row.get('license')!r} is not one of {sorted(params.licenses)}"}
    return row


def download_video(source: SourceRow, store: Path, params: DownloadParams, root: Path, cache: Path
                   ) -> dict[str, Any]:
    """Download one source video into ``store`` (reusing what is still the source); return its ``downloads`` row
    (plus ``note`` and ``seconds`` for the log). Never raises for a bad video.

    Holds the cache's lock shared (``python -m pipeline.runcache prune`` takes it exclusively), so a prune never
    removes a stored version while it is looked up or written.
    """
    with cache_lock(cache):
        return _download_video(source, store, params, root, cache)


def _download_video(source: SourceRow, store: Path, params: DownloadParams, root: Path, cache: Path
                    ) -> dict[str, Any]:
    started = time.monotonic()
    try:
        video_id = safe_video_id(source.video_id)
    except ValueError as err:
        return {"video_id": source.video_id, "url": source.url, "status": "download_error", "error": str(err),
                "seconds": 0.0}
    slot = store_slot(store, source, params)
    slot.mkdir(parents=True, exist_ok=True)
    reused, record, why_not = _reuse(slot, video_id, source, params, root, cache)
    if reused is not None:
        return {**_licence_row(reused, params), "note": "reused", "seconds": round(time.monotonic() - started, 3)}
    if record is None:
        why_not = _other_versions(store, slot, video_id, source, params)
    _forget(slot, video_id, record)
    store = slot
    staging = staging_dir(store, video_id)
    shutil.rmtree(staging, ignore_errors=True)
    _make_staging(staging)
    row: dict[str, Any] = {"video_id": video_id, "url": source.url, "path": None, "attempts": 0}
    try:
        row.update(_download(source, video_id, store, staging, params, root, cache, started + params.max_seconds,
                             row))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in (staging.parent, slot, slot.parent):  # only the empty ones: nothing of a failed try is kept
            try:
                folder.rmdir()
            except OSError:
                pass
    if row["status"] != "ok":
        log.warning("%s: download failed (%s) after %d attempt(s): %s", video_id, row["status"], row["attempts"],
                    row["error"])
    elif why_not:
        log.info("%s: downloaded again: %s", video_id, why_not)
    row["note"] = f"redownloaded: {why_not}" if why_not else "downloaded"
    row["seconds"] = round(time.monotonic() - started, 3)
    return row


def _job(source: SourceRow, url: str, staging: Path, params: DownloadParams, cookiefile: Path | None
         ) -> dict[str, Any]:
    return {"url": url, "source_url": source.url, "video_id": source.video_id, "staging": str(staging),
            "format": params.format, "retries": params.retries, "timeout": params.timeout,
            "allow_file_urls": params.allow_file_urls, "sleep_interval": params.sleep_interval,
            "max_sleep_interval": params.max_sleep_interval, "ratelimit": params.ratelimit,
            "cookiefile": str(cookiefile) if cookiefile else None, "max_bytes": params.max_bytes,
            "licenses": list(params.licenses) if params.licenses is not None else None}


def _download(source: SourceRow, video_id: str, out_dir: Path, staging: Path, params: DownloadParams, root: Path,
              cache: Path, deadline: float, row: dict[str, Any]) -> dict[str, Any]:
    """The attempt loop; returns the row's remaining fields. ``row["attempts"]`` is updated as it goes."""
    try:
        url = resolve_url(check_url(source.url, params.allow_file_urls), root)
    except ValueError as err:
        return {"status": "download_error", "error": str(err)}
    cookiefile = None
    if params.cookiefile:  # yt-dlp rewrites its cookie file on exit: give each attempt a private copy
        cookiefile = staging / "cookies.txt"
        try:
            shutil.copyfile(root / params.cookiefile, cookiefile)
        except OSError as err:
            return {"status": "download_error", "error": f"download.cookiefile {params.cookiefile}: {err.strerror}"}
    job = _job(source, url, staging, params, cookiefile)
    result: dict[str, Any] = {}
    for attempt in range(1, params.retries + 2):
        row["attempts"] = attempt
        result = _attempt(job, staging, deadline, params)
        if result["status"] not in TRANSIENT or attempt > params.retries or time.monotonic() >= deadline:
            break
        wait = backoff_seconds(attempt, params, result.get("retry_after"))
        if time.monotonic() + wait >= deadline:
            result["message"] = (f"{result['message']} (no retry: waiting {wait:.1f} s would pass the "
                                 f"{params.max_seconds:g} s per-video cap)")
            break
        log.info("%s: %s, retry %d in %.1f s", video_id, result["status"], attempt, wait)
        time.sleep(wait)
    fields = _provenance(result, source)
    if result["status"] != "ok":
        return {**fields, "status": result["status"], "error": result["message"][:2000]}
    staged = Path(result["path"])
    try:
        facts = _check_media(staged, params.max_bytes)
    except _Refused as err:
        return {**fields, "status": err.status, "error": str(err)}
    try:
        identity = _source_identity(source, url, result.get("info") or {}, params, root, cache)
    except (OSError, ValueError) as err:
        return {**fields, "status": "download_error", "error": f"cannot read the source after download: {err}"}
    final = out_dir / _media_name(video_id, staged)
    os.replace(staged, final)
    done = {**row, **fields, **facts, "status": "ok", "error": None, "path": str(final),
            "bytes": final.stat().st_size, "sha256": sha256_file(final)}
    with atomic_path(out_dir / f"{video_id}.json") as tmp:  # the file name only: the folder may move
        tmp.write_text(json.dumps({**done, "path": final.name, "format": params.format, "source": identity},
                                  indent=1))
    return _licence_row(done, params)


def _provenance(result: dict[str, Any], source: SourceRow) -> dict[str, Any]:
    """What yt-dlp says the video is. For a project file: its project-relative URL (never the checkout's absolute
    path), and no upload date (yt-dlp would report the file's mtime, the day it was built)."""
    info = result.get("info") or {}
    local = urlparse(source.url).scheme.lower() == "file"
    return {"ytdlp_version": result.get("ytdlp_version"), "extractor": info.get("extractor_key"),
            "format_id": None if info.get("format_id") is None else str(info["format_id"]),
            "license": info.get("license"), "uploader": info.get("uploader"),
            "upload_date": None if local else info.get("upload_date"), "title": info.get("title"),
            "webpage_url": source.url if local else info.get("webpage_url")}
