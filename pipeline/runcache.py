"""Per-video run cache: what a stage computed for one video, stored under a key of everything that produced it.

DVC decides which stages run; this cache decides which videos inside a stage compute. A video's key hashes

* the stage's fingerprint: its name, the content of its code closure (every project module ``stages.<name>``
  imports, plus the data files beside them, e.g. ``weights.json``), its params block, the versions of the model
  runtimes and the manifest schema version;
* the video's inputs: the content hash of the media it reads and of the upstream per-video rows it reads, and any
  per-video argument (window, model list).

An entry is a folder ``<root>/<stage>/<key[:2]>/<key>/`` holding ``status.json`` (the status row), optionally
``frames.parquet`` (the per-frame rows) and ``media/`` (files the stage writes, e.g. a clip). Workers build it in a
private temporary folder and rename it into place when the video is finished, so a kill at any moment loses only the
videos in flight, and a later run reuses every finished one. Nothing about reuse reaches a tracked output: manifests
are always assembled from the entries, whether computed now or earlier.

The cache lives in ``cache.dir`` of params (default ``.cache/runs`` inside the project, git- and DVC-ignored) or
``$WFLWV_CACHE``; several clones may share one folder, like DVC's cache. ``python -m pipeline.runcache`` reports and
prunes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.imports import import_closure
from pipeline.manifest import OutputError, float_provenance, rows_table, sha256_file, write_table
from pipeline.schemas import SCHEMA_VERSION

__all__ = [
    "CACHE_ENV", "StageCache", "CachedVideo", "cache_root", "code_digest", "file_digest", "table_digest",
    "run_cached", "run_job", "link_media",
]

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder; it wins over ``cache.dir`` in params (shared caches, CI).
CACHE_ENV = "WFLWV_CACHE"
_PROJECT = Path(__file__).resolve().parent.parent
#: Non-Python files beside a stage's modules that change what it computes (consensus weights, layouts, references).
_DATA_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".txt")
_HOST = socket.gethostname()


def cache_root(configured: str | os.PathLike[str], project: Path | None = None) -> Path:
    """The cache folder: ``$WFLWV_CACHE`` if set, else ``configured`` (relative paths are inside the project)."""
    chosen = Path(os.environ.get(CACHE_ENV) or configured).expanduser()
    return chosen if chosen.is_absolute() else (project or Path.cwd()) / chosen


def _sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "little"))
        digest.update(chunk)
    return digest.hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def code_digest(module: str, root: Path = _PROJECT) -> str:
    """Hash of the code a stage runs: every file of ``module``'s import closure and the data files beside them."""
    files = set(import_closure(module, root))
    for folder in {path.parent for path in files}:
        files.update(p.relative_to(root) for p in (root / folder).iterdir()
                     if p.is_file() and p.suffix in _DATA_SUFFIXES)
    chunks = []
    for rel in sorted(files, key=str):
        chunks += [str(rel).encode(), (root / rel).read_bytes()]
    return _sha256(*chunks)


def table_digest(table: pa.Table) -> str:
    """Content hash of a table's rows (schema metadata ignored): the same rows give the same hash."""
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class _DigestMemo:
    """SHA-256 of files, remembered per (path, size, mtime, inode) in the cache folder, like DVC's state database."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "file-digests.sqlite", timeout=60)
        self.db.execute("create table if not exists digests (path text primary key, stat text, sha256 text)")

    def get(self, path: Path) -> str:
        real = path.resolve()
        st = real.stat()
        stat = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        row = self.db.execute("select stat, sha256 from digests where path = ?", (str(real),)).fetchone()
        if row and row[0] == stat:
            return str(row[1])
        digest = sha256_file(real)
        with self.db:
            self.db.execute("insert or replace into digests values (?, ?, ?)", (str(real), stat, digest))
        return digest


_MEMOS: dict[Path, _DigestMemo] = {}


def file_digest(path: str | os.PathLike[str], cache: Path) -> str:
    """SHA-256 of a file's content, read again only when its size, mtime or inode changed."""
    memo = _MEMOS.get(cache)
    if memo is None:
        memo = _MEMOS[cache] = _DigestMemo(cache)
    return memo.get(Path(path))


@dataclass(frozen=True)
class CachedVideo:
    """A finished entry: the status row, and where its per-frame rows and media are."""

    key: str
    status: dict[str, Any]
    folder: Path

    @property
    def frames(self) -> Path | None:
        path = self.folder / "frames.parquet"
        return path if path.is_file() else None

    @property
    def media(self) -> list[Path]:
        folder = self.folder / "media"
        return sorted(folder.iterdir()) if folder.is_dir() else []


@dataclass(frozen=True)
class StageCache:
    """The entries of one stage under one fingerprint (code, params, runtimes)."""

    root: Path
    stage: str
    fingerprint: str

    @classmethod
    def for_stage(cls, root: Path, stage: str, params: Any) -> StageCache:
        """The cache of ``stages.<stage>`` with its params block (a pydantic model or plain data)."""
        dumped = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
        fingerprint = _sha256(_json({
            "stage": stage, "code": code_digest(f"stages.{stage}"), "params": dumped,
            "runtimes": json.loads(float_provenance()["produced_by"]), "schema": SCHEMA_VERSION}))
        return cls(root, stage, fingerprint)

    @property
    def folder(self) -> Path:
        return self.root / self.stage

    def key(self, video_id: str, inputs: Mapping[str, Any]) -> str:
        """The key of one video: the stage fingerprint, the id and the video's input digests/arguments."""
        return _sha256(self.fingerprint.encode(), video_id.encode(), _json(dict(inputs)))

    def entry(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def lookup(self, key: str) -> CachedVideo | None:
        """The finished entry of ``key``, or None (an unreadable entry counts as missing and is computed again)."""
        folder = self.entry(key)
        try:
            status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if folder.is_dir():  # entries appear whole (a rename), so this one was damaged later: drop it
                log.warning("%s: damaged cache entry %s removed", self.stage, folder)
                shutil.rmtree(folder, ignore_errors=True)
            return None
        os.utime(folder)  # last use, for pruning by age
        return CachedVideo(key, status, folder)

    def clear_abandoned(self, key: str = "*") -> int:
        """Remove the temporary folders (of ``key``, or of every key) that processes on this host left when they died
        (``<key>~<host>~<pid>~<random>``); return how many."""
        tmp = self.folder / ".tmp"
        dead = [p for p in tmp.glob(f"{key}~{_HOST}~*~*") if not _alive(int(p.name.split("~")[2]))]
        for path in dead:
            shutil.rmtree(path, ignore_errors=True)
        return len(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_cached(fn: Callable[..., dict[str, Any]], item: Any, cache: StageCache, key: str, frames_manifest: str | None,
               **kwargs: Any) -> dict[str, Any]:
    """Compute one video with ``fn(item, work_dir=..., **kwargs)`` and store it as entry ``key`` (on a worker).

    ``fn`` returns ``{"status": row, "rows": per-frame rows}`` and writes any media into ``work_dir``; a status row's
    ``path`` naming a file there is stored as the bare file name (the stage puts the file where its output goes).
    A row with status ``error`` (an unexpected failure, not a property of the video) is returned but not stored.
    Returns ``{"status": row, "stored": bool}``.
    """
    tmp = cache.folder / ".tmp" / f"{key}~{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:8]}"
    media = tmp / "media"
    try:
        media.mkdir(parents=True)
    except OSError as err:
        raise OutputError(f"{cache.folder}: cannot write the run cache: {err.strerror or err}") from None
    try:
        result = fn(item, work_dir=media, **kwargs)
        status = dict(result["status"])
        if status.get("path") and Path(status["path"]).parent == media:
            status["path"] = Path(status["path"]).name
        if status.get("status") == "error":
            return {"status": status, "stored": False}
        rows = result.get("rows")
        if frames_manifest is not None:
            table = rows if isinstance(rows, pa.Table) else rows_table(rows or [], frames_manifest)
            write_table(table, tmp / "frames.parquet")
        (tmp / "status.json").write_text(json.dumps(status, default=_plain), encoding="utf-8")
        if not any(media.iterdir()):
            media.rmdir()
        final = cache.entry(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)  # atomic: the entry exists whole or not at all
        except OSError:
            if not final.is_dir():  # else another run stored the same key first: theirs is as good
                raise
        return {"status": status, "stored": True}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_job(job: Mapping[str, Any], fn: Callable[..., dict[str, Any]], cache: StageCache,
            frames_manifest: str | None, **kwargs: Any) -> dict[str, Any]:
    """:func:`run_cached` for a ``{"item", "key"}`` job (a dask task), with its wall time and attempt number.

    ``attempt`` > 1 means an earlier attempt of this key died with its process on this host (a lost worker: dask ran
    the video again), which left its temporary folder behind.
    """
    started = time.monotonic()
    attempt = 1 + cache.clear_abandoned(job["key"])
    result = run_cached(fn, job["item"], cache, job["key"], frames_manifest, **kwargs)
    return {**result, "seconds": round(time.monotonic() - started, 3), "attempt": attempt}


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def link_media(files: Iterable[Path], out_dir: Path) -> None:
    """Put an entry's media files into a stage's output folder: a hard link where possible, else a copy.

    Entries are never modified in place, and DVC replaces (never rewrites) workspace files, so sharing the inode is
    safe; a file already there is replaced atomically.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in files:
        target = out_dir / src.name
        if target.exists() and os.path.samefile(src, target):
            continue  # already this entry's file (renaming a link onto its own inode would be a no-op)
        tmp = out_dir / f".{src.name}.{uuid.uuid4().hex[:8]}.link"
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)


# --- the command: report and prune -------------------------------------------------------------------------------

def _entries(root: Path) -> Iterable[tuple[str, Path]]:
    if not root.is_dir():
        return
    for stage in sorted(p for p in root.iterdir() if p.is_dir()):
        for shard in sorted(p for p in stage.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(shard.iterdir()):
                yield stage.name, entry


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def report(root: Path) -> list[str]:
    """One line per stage: entries, size, oldest last use."""
    stats: dict[str, list[float]] = {}
    for stage, entry in _entries(root):
        s = stats.setdefault(stage, [0, 0, time.time()])
        s[0] += 1
        s[1] += _size(entry)
        s[2] = min(s[2], entry.stat().st_mtime)
    lines = [f"{root}: {sum(int(s[0]) for s in stats.values())} entries, "
             f"{sum(s[1] for s in stats.values()) / 1e6:.1f} MB"]
    for stage, (n, size, oldest) in sorted(stats.items()):
        age = (time.time() - oldest) / 86400
        lines.append(f"  {stage:<10} {int(n):6d} entries {size / 1e6:10.1f} MB  least recently used {age:.1f} days ago")
    return lines


def prune(root: Path, older_than_days: float, stage: str | None = None) -> tuple[int, int]:
    """Remove entries not used for ``older_than_days`` days (0 = all); return (entries, bytes) removed."""
    cutoff = time.time() - older_than_days * 86400
    count = size = 0
    for name, entry in _entries(root):
        if (stage is None or name == stage) and entry.stat().st_mtime <= cutoff:
            size += _size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            count += 1
    return count, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.runcache",
                                     description="Report or prune the per-video run cache (cache.dir in params, "
                                                 f"or ${CACHE_ENV}).")
    parser.add_argument("--params", default="params.yaml", help="params file naming cache.dir (default: %(default)s)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("report", help="entries and size per stage")
    pr = sub.add_parser("prune", help="remove entries not used for a while")
    pr.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="days since last use (0 = all)")
    pr.add_argument("--stage", help="only this stage's entries")
    args = parser.parse_args(argv)
    from pipeline.params import ParamsError, stage_params

    try:
        root = cache_root(stage_params("cache", args.params).dir)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "prune":
        if args.older_than < 0:
            print("error: --older-than: must be >= 0 days", file=sys.stderr)
            return 2
        count, size = prune(root, args.older_than, args.stage)
        print(f"removed {count} entries ({size / 1e6:.1f} MB) from {root}")
    print("\n".join(report(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
