"""What every stage entry point shares: argument parsing, logging, and status bookkeeping."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.cluster import imap_videos
from pipeline.manifest import ManifestError, ManifestWriter, OutputError, atomic_path, write_rows
from pipeline.params import ClusterParams, ParamsError, load_params
from pipeline.runcache import CachedVideo, StageCache, cache_lock, is_fact, link_media, run_job
from pipeline.schemas import error_status

__all__ = ["stage_parser", "setup_logging", "summarize", "skipped_row", "project_relative", "run_stage",
           "TIMINGS_DIR", "OutputError", "check_outputs", "VideoTask", "StageOutputs",
           "run_cached_stage", "write_timings"]

#: Per-video wall times go here (untracked), not into the DVC-tracked manifests: they differ on every run, and a
#: tracked output that changes on every run would make ``dvc.lock`` (and ``git status``) dirty after each repro.
TIMINGS_DIR = Path("logs") / "timings"


def run_stage(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a stage's ``main``; bad params, manifests, missing inputs or unwritable outputs end in one ``error:``
    line and exit 2."""
    try:
        return main(argv)
    except (ParamsError, ManifestError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:  # the stages catch per-video faults; what is left is the run's own input or output
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
    return 2


class _StageParser(argparse.ArgumentParser):
    """Validates the whole params file right after parsing, so bad params are reported before any work starts; every
    option's help shows its default (the defaults match ``dvc.yaml``)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action") not in ("store_true", "store_false", "help", "version") and args and \
                str(args[0]).startswith("-") and "%(default)" not in kwargs.get("help", ""):
            kwargs["help"] = f"{kwargs.get('help', '')} (default: %(default)s)".strip()
        return super().add_argument(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        load_params(parsed.params)
        return parsed


def _program() -> str | None:
    """``python -m stages.<name>`` when run as a stage module (argv[0] is then the module's file)."""
    path = Path(sys.argv[0])
    return f"python -m stages.{path.stem}" if path.parent.name == "stages" and path.suffix == ".py" else None


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes (``--params``, ``--log-level``)."""
    parser = _StageParser(prog=_program(), description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def setup_logging(level: str = "INFO") -> None:
    """Plain timestamped logging to stderr; dask's chatter is kept at WARNING."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "bokeh", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def summarize(stage: str, rows: Iterable[Mapping[str, Any]], log_it: bool = True) -> str:
    """One line of status counts, e.g. ``trim: 24 ok, 1 bad_window``; logged by each stage."""
    counts = Counter(r["status"] for r in rows)
    text = f"{stage}: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()) if counts else f"{stage}: no videos"
    if log_it:
        logging.getLogger("stages").info(text)
    return text


def project_relative(rows: list[dict[str, Any]], key: str = "path") -> list[dict[str, Any]]:
    """Store media paths relative to the project root (the working directory of every stage), so manifests stay
    valid when the project folder moves and do not differ between clones."""
    root = Path.cwd().resolve()
    for row in rows:
        if row.get(key):
            path = Path(row[key]).resolve()
            row[key] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return rows


def skipped_row(video_id: str, upstream: str, status: str, error: str | None, **extra: Any) -> dict[str, Any]:
    """The row a stage writes for a video that failed upstream: status ``skipped`` and the upstream reason."""
    return {"video_id": video_id, "status": "skipped", "error": f"{upstream} {status}: {error}", **extra}


@dataclass(frozen=True)
class VideoTask:
    """One video's work for :func:`run_cached_stage`: what the task receives and what its cache key hashes."""

    video_id: str
    item: Any
    inputs: Mapping[str, Any]  # content digests of what it reads, per-video arguments


@dataclass(frozen=True)
class StageOutputs:
    """Where a cached per-video stage writes: its status manifest, optionally per-frame rows and media files."""

    status_manifest: str
    status_out: Path
    frames_manifest: str | None = None
    frames_out: Path | None = None
    media_out: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.status_out, self.frames_out) if p is not None]


def check_outputs(files: Iterable[str | Path], folders: Iterable[str | Path] = ()) -> None:
    """Make sure every output can be written before any work starts; raise :class:`OutputError` naming the path.

    Creates the folders (a stage's declared outputs exist even when no video reaches it).
    """
    for folder in [*(Path(f).parent for f in files), *map(Path, folders)]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{folder}: cannot create the output folder: a file is in the way") from None
        except OSError as err:
            raise OutputError(f"{folder}: cannot create the output folder: {err.strerror}") from None
        if not folder.is_dir():
            raise OutputError(f"{folder}: cannot create the output folder: a file is in the way")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{folder}: output folder is not writable")


def write_timings(stage: str, timings: Mapping[str, tuple[float, bool]], notes: Mapping[str, str] | None = None
                  ) -> None:
    """``logs/timings/<stage>.csv``: per video the wall seconds, whether the result was reused (from the run cache or
    the download store) and a note (why a download was fetched again)."""
    if not timings:
        return
    notes = notes or {}
    lines = [f"{vid},{seconds},{str(reused).lower()},{notes.get(vid, '').replace(',', ';')}\n"
             for vid, (seconds, reused) in sorted(timings.items())]
    with atomic_path(TIMINGS_DIR / f"{stage}.csv") as tmp:
        tmp.write_text("video_id,seconds,reused,note\n" + "".join(lines), encoding="utf-8")


def run_cached_stage(stage: str, fn: Callable[..., dict[str, Any]], tasks: list[VideoTask],
                     skipped: list[dict[str, Any]], cluster: ClusterParams, cache: StageCache, outputs: StageOutputs,
                     frames_metadata: Mapping[str, str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a per-video stage through the run cache; write its manifests; return the status rows.

    Every video whose key has a whole entry is reused; the others are computed on dask (``fn(item, work_dir=...,
    **kwargs)`` returning ``{"status": row, "rows": per-frame rows}``) and stored as each finishes, if the result is a
    fact of the video (:func:`pipeline.runcache.is_fact`). A video that failed for a reason of this run (a model, the
    file system, memory, a worker whose environment differs) keeps its status row in the manifest and is computed
    again next run. The manifests are then assembled from the entries in video order, one video at a time, so they
    are byte-identical whether a video was computed or reused, and the client's memory does not grow with the
    dataset. The stage holds the cache's lock shared throughout, so prune never removes what it uses, and records
    which entries built its outputs, so prune keeps them.

    Raises:
        CacheError: an entry cannot be read or stored for a reason of this run (full disk, EIO…): nothing is written.
    """
    check_outputs(outputs.paths(), [cache.folder, *([outputs.media_out] if outputs.media_out else [])])
    with cache_lock(cache.root):
        return _run_cached_stage(stage, fn, tasks, skipped, cluster, cache, outputs, frames_metadata, **kwargs)


def _run_cached_stage(stage: str, fn: Callable[..., dict[str, Any]], tasks: list[VideoTask],
                      skipped: list[dict[str, Any]], cluster: ClusterParams, cache: StageCache, outputs: StageOutputs,
                      frames_metadata: Mapping[str, str] | None, **kwargs: Any) -> list[dict[str, Any]]:
    log = logging.getLogger("stages")
    cleared = cache.clear_abandoned()
    if cleared:
        log.info("%s: removed %d unfinished cache entries of killed runs", stage, cleared)
    entries: dict[str, CachedVideo] = {}
    statuses: dict[str, dict[str, Any]] = {}
    timings: dict[str, tuple[float, bool]] = {}
    todo: list[dict[str, Any]] = []
    for task in tasks:
        started = time.monotonic()
        key = cache.key(task.video_id, task.inputs)
        hit = cache.lookup(key)
        if hit is None:
            todo.append({"video_id": task.video_id, "item": task.item, "key": key})
            continue
        _take(hit, outputs, entries, statuses)
        timings[task.video_id] = (round(time.monotonic() - started, 3), True)
    retried = 0

    def on_error(job: dict[str, Any], err: BaseException) -> dict[str, Any]:
        return {"status": error_status(job["video_id"], err), "stored": False}

    jobs = imap_videos(run_job, todo, cluster, on_error=on_error, fn=fn, cache=cache,
                       frames_manifest=outputs.frames_manifest, **kwargs)
    for index, result in jobs:
        job = todo[index]
        if "output_fault" in result:  # the cache or an output cannot be written: no manifest may be written either
            raise OutputError(result["output_fault"])
        if result.get("attempt", 1) > 1:
            retried += 1
            log.warning("%s: %s computed again after its worker was lost (attempt %d)", stage, job["video_id"],
                        result["attempt"])
        hit = cache.lookup(job["key"]) if result.get("stored") else None
        if hit is not None:
            _take(hit, outputs, entries, statuses)
        else:
            statuses[job["video_id"]] = {k: v for k, v in result["status"].items() if k != "seconds"}
        timings[job["video_id"]] = (result.get("seconds", result["status"].get("seconds", 0.0)), False)
    if outputs.frames_manifest is not None and outputs.frames_out is not None:
        with ManifestWriter(outputs.frames_out, outputs.frames_manifest, metadata=frames_metadata) as writer:
            for vid in sorted(entries):
                frames = entries[vid].frames
                if frames is not None:
                    writer.write(pq.read_table(frames))
    extra = {"stage": stage} if outputs.status_manifest == "video_status" else {}
    rows = [{**row, **extra} for row in skipped] + [{**row, **extra} for row in statuses.values()]
    rows.sort(key=lambda r: r["video_id"])
    write_rows(project_relative(rows), outputs.status_manifest, outputs.status_out)
    cache.record_outputs([outputs.status_out, outputs.frames_out], (hit.key for hit in entries.values()))
    write_timings(stage, timings)
    reused = sum(1 for _, was_reused in timings.values() if was_reused)
    summary = summarize(stage, rows, log_it=False)
    log.info("%s (%d reused, %d computed%s)", summary, reused, len(timings) - reused,
             f", {retried} after a lost worker" if retried else "")
    faults = {vid: row for vid, row in statuses.items() if not is_fact(row)}
    if faults:
        first = next(iter(sorted(faults.items())))
        log.warning("%s: %d video(s) failed for a reason of this run, not of the video (not stored; computed again "
                    "next run), e.g. %s: %s: %s", stage, len(faults), first[0], first[1]["status"], first[1]["error"])
    return rows


def _take(hit: CachedVideo, outputs: StageOutputs, entries: dict[str, CachedVideo],
          statuses: dict[str, dict[str, Any]]) -> None:
    """Adopt a finished entry: its status row (media paths pointing into the stage's output folder) and media."""
    status = {k: v for k, v in hit.status.items() if k != "seconds"}
    if outputs.media_out is not None:
        link_media(hit.media, outputs.media_out)
        if status.get("path"):
            status["path"] = str(outputs.media_out / status["path"])
    entries[status["video_id"]] = hit
    statuses[status["video_id"]] = status
