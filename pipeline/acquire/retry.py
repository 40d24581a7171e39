"""Which sources a download run attempts again: what failed for a passing reason, not what failed for good.

Finished downloads live in the download store and are reused there (:mod:`pipeline.acquire.download`). A failure
leaves no file, so its outcome is kept beside the store, one record per video
(``<cache>/download_outcomes/<id>.json``: the status row and the url, format selector and project-file hash it was
for). The next run, with ``download.retry`` (or ``--retry-failed``, which means ``failed`` for one run):

* ``failed``: attempts again only the sources whose last outcome was transient (:data:`TRANSIENT`: network errors,
  rate limits, server errors, timeouts, truncated bodies); the others (``unavailable``, ``private``, ``geo``,
  ``forbidden``, ``needs_auth``, a file that is not a video, …) keep their row, status and error as they were;
* ``all``: attempts every failed source again (what a run does without a record);
* ``none``: attempts no failed source: only new sources and sources that changed.

A source named with ``--retry ID`` is attempted whatever its last outcome; a source whose url, format or project
file changed since its failure has no outcome to go by and is attempted. A source that succeeds loses its record; an
``error`` row (a lost worker, a bug: a fault of the run, not of the source) leaves it as it was.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.acquire.ytdlp_run import TRANSIENT
from pipeline.manifest import OutputError, atomic_path
from pipeline.params import DownloadParams
from pipeline.sources import SourceRow, safe_video_id

__all__ = ["OUTCOMES", "RetryPlan", "plan_retries", "record_outcomes", "change_lines", "TRANSIENT"]

log = logging.getLogger(__name__)

#: Folder of the last failed outcome per video, inside the cache folder (beside the download store).
OUTCOMES = "download_outcomes"
#: Statuses that are not a failed attempt: a stored download, or one left out by the licence filter.
_NOT_FAILURES = ("ok", "licence_filtered")
#: Not an outcome of the source but of the run (a lost worker, a bug): it leaves the record as it was.
_RUN_FAULTS = ("error",)


@dataclass
class RetryPlan:
    """The sources to attempt, the rows kept from the last run, and each attempted source's previous status."""

    attempt: list[SourceRow] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)  # video id → last failed status, for the attempted ones
    mode: str = "all"


def _record_path(folder: Path, video_id: str) -> Path | None:
    try:
        return folder / f"{safe_video_id(video_id)}.json"
    except ValueError:
        return None  # an unsafe id is a status row of the download itself, never a path


def _key(source: SourceRow, params: DownloadParams) -> dict[str, Any]:
    return {"url": source.url, "format": params.format, "content_sha256": source.content_sha256}


def _last_outcome(folder: Path, source: SourceRow, params: DownloadParams) -> dict[str, Any] | None:
    """The last failed row of this source as it is now (same url, format and project file), or None."""
    path = _record_path(folder, source.video_id)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != _key(source, params):
        return None
    row = record.get("row")
    return row if isinstance(row, dict) and row.get("status") not in (None, *_NOT_FAILURES, *_RUN_FAULTS) else None


def plan_retries(sources: Sequence[SourceRow], cache: Path, params: DownloadParams, mode: str | None = None,
                 by_name: Iterable[str] = ()) -> RetryPlan:
    """Split ``sources`` into those to attempt and the rows to keep (see the module docstring).

    ``mode`` overrides ``params.retry``; ``by_name`` are video ids to attempt whatever their last outcome. An id in
    ``by_name`` that is not a source raises ``ValueError`` naming it.
    """
    mode = mode or params.retry
    named = set(by_name)
    unknown = sorted(named - {s.video_id for s in sources})
    if unknown:
        raise ValueError(f"--retry: {', '.join(unknown)} not in the source list")
    folder = cache / OUTCOMES
    plan = RetryPlan(mode=mode)
    for source in sources:
        last = _last_outcome(folder, source, params)
        if last is None:
            plan.attempt.append(source)
            continue
        retry = source.video_id in named or mode == "all" or (mode == "failed" and last["status"] in TRANSIENT)
        if retry:
            plan.attempt.append(source)
            plan.before[source.video_id] = last["status"]
        else:
            plan.kept.append(dict(last))
    return plan


def record_outcomes(rows: Iterable[dict[str, Any]], sources: Sequence[SourceRow], cache: Path,
                    params: DownloadParams) -> None:
    """Keep each attempted source's failed row for the next run; forget the record of one that succeeded."""
    folder = cache / OUTCOMES
    by_id = {s.video_id: s for s in sources}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            source = by_id.get(row["video_id"])
            path = _record_path(folder, row["video_id"])
            if source is None or path is None:
                continue
            if row["status"] in _NOT_FAILURES:
                path.unlink(missing_ok=True)
                continue
            if row["status"] in _RUN_FAULTS:
                continue
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"key": _key(source, params), "row": row}, indent=1, default=str))
    except OSError as err:
        raise OutputError(f"{err.filename or folder}: cannot keep the download outcomes ({err.strerror or err})") \
            from None


def change_lines(plan: RetryPlan, rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the retry changed, for the log: a summary line, then one line per re-attempted source."""
    after = {r["video_id"]: r["status"] for r in rows}
    moved = [(vid, before, after.get(vid, "?")) for vid, before in sorted(plan.before.items())]
    fixed = sum(1 for _, _, now in moved if now == "ok")
    kept = Counter(r["status"] for r in plan.kept)
    lines = [f"retry (download.retry: {plan.mode}): {len(moved)} failed source(s) attempted again, {fixed} now ok, "
             f"{len(moved) - fixed} failed again; {len(plan.kept)} kept as they were"
             + (f" ({', '.join(f'{n} {s}' for s, n in sorted(kept.items()))}; attempt one with --retry ID)"
                if plan.kept else "")]
    lines += [f"retry: {vid}: {before} -> {now}" for vid, before, now in moved]
    return lines
