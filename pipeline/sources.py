"""Source lists: reading and validating the project's CSV format and the official WFLW-V text lists.

Own format (``.csv``, header required)::

    video_id,url,start_frame,end_frame[,official_subset]

Official WFLW-V format (``.txt``): ``<youtube_id> <start_frame> <end_frame>`` per line, as in
``download_ranges.txt``; lines whose window is ``None None`` (candidates in ``frame_windows_all.txt``) are skipped.

Windows are 0-based, inclusive, decoded-frame indices of the source video.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "SourceRow", "SourceListError", "read_source_list", "safe_video_id", "check_url", "youtube_url", "ALLOWED_SCHEMES",
]

#: Video IDs become file names, so they are restricted to a safe alphabet (YouTube IDs fit it).
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
ALLOWED_SCHEMES = ("http", "https")
REQUIRED_COLUMNS = ("video_id", "url", "start_frame", "end_frame")


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


def youtube_url(video_id: str) -> str:
    """The watch URL of a YouTube ID."""
    return f"https://www.youtube.com/watch?v={video_id}"


def _parse_int(value: str | None, column: str) -> int:
    if value is None or str(value).strip() == "":
        raise ValueError(f"missing {column}")
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{column} {text!r} is not an integer")
    number = int(text)
    if number < 0:
        raise ValueError(f"{column} {number} is negative")
    return number


def _records(path: Path) -> list[tuple[int, dict[str, str | None]]]:
    """Yield ``(line_number, raw fields)`` from either format."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceListError([f"{path}:1: header lacks column(s) {', '.join(missing)}"])
            return [(reader.line_num, row) for row in reader if any((v or "").strip() for v in row.values())]
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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
    return records


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
            for token in Path(path).read_text(encoding="utf-8").split():
                subsets[token] = name
    return subsets
