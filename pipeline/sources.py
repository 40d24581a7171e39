"""Source lists: reading and validating the project's CSV format and the official WFLW-V text lists.

Own format (``.csv``, UTF-8 with or without a BOM, header required)::

    video_id,url,start_frame,end_frame[,official_subset]

``official_subset`` is ``easy``, ``hard`` or empty; a row with more fields than the header is an error.

Official WFLW-V format (``.txt``): ``<youtube_id> <start_frame> <end_frame>`` per line, as in
``download_ranges.txt``; lines whose window is ``None None`` (candidates in ``frame_windows_all.txt``) are skipped.

Windows are 0-based, inclusive, decoded-frame indices of the source video.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = [
    "SourceRow", "SourceListError", "read_source_list", "safe_video_id", "check_url", "local_file", "youtube_url",
    "ALLOWED_SCHEMES",
]

#: Video IDs become file names, so they are restricted to a safe alphabet (YouTube IDs fit it).
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
ALLOWED_SCHEMES = ("http", "https")
REQUIRED_COLUMNS = ("video_id", "url", "start_frame", "end_frame")
SUBSETS = ("easy", "hard")
_INT64_MAX = 2**63 - 1  # manifests store frames as int64


class SourceListError(ValueError):
    """A source list has malformed rows; ``problems`` holds ``"file:line: message"`` strings."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("invalid source list:\n" + "\n".join(problems[:20]) + more)


@dataclass(frozen=True)
class SourceRow:
    """One validated source: a video and the inclusive frame window to keep."""

    video_id: str
    url: str
    start_frame: int
    end_frame: int
    official_subset: str | None
    source_file: str
    source_line: int
    content_sha256: str | None = None  # project files (file: URLs) only: what the download must match



def safe_video_id(video_id: str) -> str:
    """Return ``video_id`` if it is safe as a file name, else raise ``ValueError`` saying why."""
    if not _ID_PATTERN.match(video_id) or video_id in {".", ".."} or ".." in video_id:
        raise ValueError(f"video_id {video_id!r} is not a safe file name (allowed: letters, digits, '_', '-', '.')")
    return video_id


def check_url(url: str, allow_file_urls: bool = False) -> str:
    """Return ``url`` if its scheme is allowed (http/https; file only when enabled), else raise ``ValueError``."""
    scheme = urlparse(url).scheme.lower()
    allowed = ALLOWED_SCHEMES + (("file",) if allow_file_urls else ())
    if scheme not in allowed:
        raise ValueError(f"URL scheme {scheme or '(none)'!r} is not allowed (allowed: {', '.join(allowed)}): {url!r}")
    return url


def local_file(url: str, root: Path) -> Path | None:
    """The project file a ``file:`` URL names (``file:data/x.mp4`` is relative to ``root``), or None for other URLs.

    A path outside ``root`` once ``..`` is resolved (``file:../../etc``, an absolute path elsewhere) or a ``file:`` URL
    naming a host raises ``ValueError``. Symlinks inside the project are followed as they are (DVC may link its cache
    into the workspace).
    """
    parsed = urlparse(url)
    if parsed.scheme.lower() != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {url!r} names a host")
    rest = unquote(parsed.path if url.lower().startswith("file://") else url[len("file:"):])
    base = Path(os.path.abspath(root))
    target = Path(os.path.normpath(base / rest))
    if not target.is_relative_to(base):
        raise ValueError(f"file URL {url!r} points outside the project folder")
    return target


def youtube_url(video_id: str) -> str:
    """The watch URL of a YouTube ID."""
    return f"https://www.youtube.com/watch?v={video_id}"


def _parse_int(value: str | None, column: str) -> int:
    if value is None or str(value).strip() == "":
        raise ValueError(f"missing {column}")
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{column} {text!r} is not an integer")
    if len(text.lstrip("+-").lstrip("0")) > 19:  # before int(): Python refuses to parse over 4300 digits
        raise ValueError(f"{column} {text[:24]}{'...' if len(text) > 24 else ''} is beyond the int64 range")
    number = int(text)
    if number < 0:
        raise ValueError(f"{column} {number} is negative")
    if number > _INT64_MAX:
        raise ValueError(f"{column} {number} is beyond the int64 range")
    return number


def _lines(path: Path) -> tuple[list[str], dict[int, str]]:
    """The file's lines (a UTF-8 BOM dropped) and ``{line: problem}`` for lines that are not UTF-8 (kept empty)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SourceListError([f"{path}: cannot read: {err.strerror}"]) from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines, bad = [], {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            bad[number] = f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
            lines.append("")
    return lines, bad


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(line_number, raw fields)`` from either format; undecodable lines carry an ``_error``."""
    lines, bad = _lines(path)
    undecodable: list[tuple[int, dict[str, Any]]] = [(n, {"_error": problem}) for n, problem in bad.items()]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(lines)
        if 1 in bad:
            raise SourceListError([f"{path}:1: header is {bad[1]}"])
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise SourceListError([f"{path}:1: header lacks column(s) {', '.join(missing)}"])
        rows: list[tuple[int, dict[str, Any]]] = []
        for fields in reader:
            record: dict[Any, Any] = dict(fields)
            extra = record.pop(None, None)  # csv puts fields beyond the header under the key None
            if extra is not None:
                record["_error"] = f"{len(extra)} field(s) beyond the header's {len(header)} columns"
            if any(str(v or "").strip() for v in record.values()):
                rows.append((reader.line_num, record))
        return sorted(rows + undecodable, key=lambda item: item[0])
    records = undecodable
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) == 3 and tokens[1] == "None" and tokens[2] == "None":
            continue  # a candidate without a window
        row: dict[str, str | None] = dict(zip(("video_id", "start_frame", "end_frame"), tokens[:3]))
        row["url"] = youtube_url(tokens[0]) if tokens else None
        if len(tokens) != 3:
            row["_error"] = f"expected 3 fields '<id> <start_frame> <end_frame>', found {len(tokens)}"
        records.append((number, row))
    return sorted(records, key=lambda item: item[0])


def read_source_list(
    path: str | Path,
    subsets: dict[str, str] | None = None,
    allow_file_urls: bool = False,
    limit: int | None = None,
) -> tuple[list[SourceRow], list[str]]:
    """Read and validate a source list.

    Args:
        path: A ``.csv`` in the project's format or an official WFLW-V ``.txt`` list.
        subsets: Optional ``{video_id: "easy" | "hard"}`` (the official ID lists) to record per row.
        allow_file_urls: Accept ``file://`` URLs (the embedded demo uses them).
        limit: Keep only the first ``limit`` valid rows.

    Returns:
        The valid rows and a list of ``"file:line: problem"`` strings for the rejected ones.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceListError([f"{path}: source list does not exist"])
    rows: list[SourceRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, raw in _records(path):
        try:
            if raw.get("_error"):
                raise ValueError(raw["_error"])
            video_id = (raw.get("video_id") or "").strip()
            if not video_id:
                raise ValueError("missing video_id")
            safe_video_id(video_id)
            url = (raw.get("url") or "").strip()
            if not url:
                raise ValueError("missing url")
            check_url(url, allow_file_urls)
            start = _parse_int(raw.get("start_frame"), "start_frame")
            end = _parse_int(raw.get("end_frame"), "end_frame")
            if end < start:
                raise ValueError(f"end_frame {end} < start_frame {start}")
            if video_id in seen:
                raise ValueError(f"duplicate video_id {video_id!r} (first on line {seen[video_id]})")
            subset = (raw.get("official_subset") or "").strip() or (subsets or {}).get(video_id)
            if subset is not None and subset not in SUBSETS:
                raise ValueError(f"official_subset {subset!r} is not one of {', '.join(SUBSETS)} (or empty)")
        except ValueError as err:
            problems.append(f"{path}:{line}: {err}")
            continue
        seen[video_id] = line
        rows.append(SourceRow(video_id, url, start, end, subset, str(path), line))
        if limit is not None and len(rows) >= limit:
            break
    return rows, problems


def read_id_lists(easy: str | Path | None, hard: str | Path | None) -> dict[str, str]:
    """Read the official easy/hard ID lists into ``{video_id: subset}``."""
    subsets: dict[str, str] = {}
    for name, path in (("easy", easy), ("hard", hard)):
        if path:
            lines, bad = _lines(Path(path))
            if bad:
                raise SourceListError([f"{path}:{n}: {problem}" for n, problem in bad.items()])
            for token in " ".join(lines).split():
                subsets[token] = name
    return subsets
