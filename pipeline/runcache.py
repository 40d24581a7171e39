"""Per-video run cache: what a stage computed for one video, stored under a key of everything that produced it.

DVC decides which stages run; this cache decides which videos inside a stage compute. A video's key hashes

* the stage's fingerprint: its name, its params block, the manifest schema version, and the environment that
  computes it (:func:`environment`): the content of its code closure (every project module ``stages.<name>`` imports,
  plus the data files beside them, e.g. ``weights.json``), Python's version, the version of every third-party
  distribution the closure imports (OpenCV under whatever distribution name it was installed), PyAV's FFmpeg
  libraries, the SIMD kernel pins and the CPU level they pin to, and the *facts* that modules of the closure report
  through a ``cache_key_facts(params)`` function (the SHA-256 of every model file, the face detector a fallback chain
  resolves to);
* the video's inputs: the content hash of the media it reads and of the upstream per-video rows it reads, and any
  per-video argument (window, model list).

Only facts are stored: a result that is a property of the video under that key (``ok``, ``no_face``,
``bad_window``, media that cannot be decoded: :data:`FACT_STATUSES`). A failure caused by the run (a model that is
unavailable or fails, memory, the file system, a lost worker, a timeout, anything unexpected:
:func:`failure_status`) is reported in the status row of this run and computed again by the next one. A worker
computes a task only when its own environment is the client's (else it refuses the task, saying what differs), so
what is stored under a key is what that key names.

An entry is a folder ``<root>/<stage>/<key[:2]>/<key>/`` holding ``entry.json`` (the status row and the list of
pieces with their size and SHA-256), optionally ``frames.parquet`` (the per-frame rows) and ``media/`` (files the
stage writes, e.g. a clip). Workers build it in a private temporary folder, fsync it and rename it into place when
the video is finished, so a kill or a power loss at any moment loses only the videos in flight. A lookup checks every
piece; an entry with a missing or changed piece is discarded (said in the log) and computed again. Nothing about
reuse reaches a tracked output: manifests are always assembled from the entries, whether computed now or earlier.

The cache lives in ``cache.dir`` of params (default ``.cache/runs`` inside the project, git- and DVC-ignored) or
``$WFLWV_CACHE``; several clones may share one folder, like DVC's cache. ``python -m pipeline.runcache`` reports and
prunes it; prune keeps whatever the projects' ``dvc.lock`` and current outputs were built from.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import errno
import fcntl
import hashlib
import importlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from pipeline.cluster import SINGLE_THREAD_ENV
from pipeline.imports import external_imports, import_closure, module_name
from pipeline.kernels import kernel_level
from pipeline.manifest import OutputError, atomic_path, rows_table, sha256_file, write_table
from pipeline.schemas import SCHEMA_VERSION

__all__ = [
    "CACHE_ENV", "FACT_STATUSES", "CacheError", "CacheBusy", "StageCache", "CachedVideo", "cache_root", "cache_lock",
    "code_digest", "file_digest", "table_digest", "environment", "environment_difference", "failure_status",
    "is_fact", "run_cached", "run_job", "link_media", "memo_location", "prune", "plan_prune", "report",
]

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder; it wins over ``cache.dir`` in params (shared caches, CI).
CACHE_ENV = "WFLWV_CACHE"
_PROJECT = Path(__file__).resolve().parent.parent
#: Non-Python files beside a stage's modules that change what it computes (consensus weights, layouts, references).
_DATA_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".txt")
_HOST = socket.gethostname()
#: Layout of an entry (``entry.json`` with its pieces); part of every key, so entries of another layout never match.
ENTRY_FORMAT = 2
_INDEX = "entry.json"
_FRAMES = "frames.parquet"
_TRASH = ".trash"  # what is being deleted: renamed here first, so no reader ever sees half an entry
_OUTPUTS = ".outputs"  # per stage: which entries built an output file (by its MD5, as dvc.lock names it)
_LOCK = ".lock"  # stages hold it shared while they run, prune exclusively
#: A temporary folder without a lock file (an older writer's layout) is left alone this long after its last change.
_UNLOCKED_GRACE_S = 3600.0


class CacheError(OutputError):
    """The run cache cannot be read or written for a reason of this run (a full disk, no permission, a read-only
    file system, EIO, EMFILE): the stage ends in one line naming the path, and nothing is stored or deleted."""


class CacheBusy(CacheError):
    """Another process holds the cache's lock in a way that excludes this one (a stage runs while prune is asked)."""


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


def _fault(path: Path | str, doing: str, err: OSError | sqlite3.Error) -> CacheError:
    reason = getattr(err, "strerror", None) or str(err)
    where = getattr(err, "filename", None) or path
    return CacheError(f"{where}: cannot {doing}: {reason}")


# --- facts and faults ---------------------------------------------------------------------------------------------

#: Statuses that are properties of a video under its key, and the only ones stored.
FACT_STATUSES = frozenset({"ok", "no_face", "bad_window", "decode_error", "no_video_stream", "unlabelable"})

#: errno values that say something about the machine, not the media: the file system, memory, the network, locks.
RUN_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EIO", "EMFILE", "ENFILE", "ENOSPC", "EDQUOT", "ENOMEM", "EACCES", "EPERM", "EROFS", "ESTALE", "ETIMEDOUT",
    "EAGAIN", "EINTR", "EBUSY", "ENOENT", "ENOTDIR", "EISDIR", "ENXIO", "ENODEV", "EBADF", "ENOLCK", "EPIPE",
    "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "ENOTCONN", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH", "EREMOTEIO",
) if hasattr(errno, name))


def failure_status(err: BaseException, where: str | os.PathLike[str], invalid: str = "decode_error"
                   ) -> dict[str, str]:
    """``{"status", "error"}`` of a video task that failed with ``err``, decided by what the error is.

    * FFmpeg could not make sense of the media (invalid data, no decoder, a bitstream it rejects): ``decode_error``,
      a fact of the video under its key (the key names PyAV's FFmpeg libraries). An FFmpeg error that carries a
      system errno of :data:`RUN_ERRNOS` (EIO, EMFILE, ENOENT, ETIMEDOUT…) is the machine's, not the media's.
    * ``ValueError``/``IndexError`` raised by the stage's own checks of the media (a window past its end, a frame
      count that disagrees with its upstream rows): ``invalid`` (``decode_error`` or ``bad_window``), a fact.
    * a model that is unavailable or fails (``ModelUnavailable``, any ``RuntimeError``): ``model_error``;
      the file system, memory, a timeout or anything else: ``error``. Both are faults of this run: reported, never
      stored, computed again next run.
    """
    text = f"{os.fspath(where)}: {type(err).__name__}: {err}"
    av = sys.modules.get("av")  # an FFmpeg error can only come from a loaded PyAV; never import it for this
    if av is not None and isinstance(err, av.error.FFmpegError):
        code = getattr(err, "errno", None)
        if code is not None and abs(code) in RUN_ERRNOS:
            return {"status": "error", "error": text}
        return {"status": "decode_error", "error": text}
    if isinstance(err, (OSError, MemoryError)):  # TimeoutError is an OSError
        return {"status": "error", "error": text}
    if isinstance(err, RuntimeError):  # ModelUnavailable is one, and so are onnxruntime's and torch's failures
        return {"status": "model_error", "error": text}
    if isinstance(err, (ValueError, IndexError)):
        return {"status": invalid, "error": text}
    return {"status": "error", "error": text}


def is_fact(status: Mapping[str, Any]) -> bool:
    """Whether a status row is a property of the video under its key (and may be stored)."""
    return status.get("status") in FACT_STATUSES


# --- the environment that computes a stage -------------------------------------------------------------------------

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


_TOP_NAME = re.compile(r"^([^/,\n]+)", re.M)
_DISTRIBUTIONS: dict[str, list[tuple[str, str]]] | None = None


def _distributions() -> dict[str, list[tuple[str, str]]]:
    """Top-level import name → ``[(distribution, version)]`` of everything installed, read once per process.

    Both the ``top_level.txt`` a distribution declares and the files its RECORD lists count: dlib-bin declares only
    ``_dlib_pybind11`` but installs ``dlib/``, and OpenCV's ``cv2`` comes from one of several distributions.
    """
    global _DISTRIBUTIONS
    if _DISTRIBUTIONS is None:
        from importlib.metadata import distributions

        found: dict[str, set[tuple[str, str]]] = {}
        for dist in distributions():
            name = dist.metadata["Name"]
            if not name:
                continue
            tops = set((dist.read_text("top_level.txt") or "").split())
            for top in _TOP_NAME.findall(dist.read_text("RECORD") or ""):
                if top.endswith((".dist-info", ".egg-info", ".data", ".pth")) or top in ("..", "__pycache__"):
                    continue
                tops.add(top.split(".")[0] if top.endswith((".py", ".so", ".pyd")) else top)
            for top in tops:
                found.setdefault(top, set()).add((name, dist.version))
        _DISTRIBUTIONS = {top: sorted(dists) for top, dists in found.items()}
    return _DISTRIBUTIONS


def installed_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{distribution: version}`` of the distributions that provide the top-level modules ``names``; a module no
    installed distribution provides is listed as ``{"<module> (not installed)": None}``."""
    table = _distributions()
    versions: dict[str, str | None] = {}
    for name in sorted(set(names)):
        dists = table.get(name)
        if not dists:
            versions[f"{name} (not installed)"] = None
        for dist, version in dists or ():
            versions[dist] = version
    return versions


def cpu_level() -> str:
    """The SIMD level the numeric kernels of a process with this environment run at: the highest x86-64 level that
    the CPU has and the kernel pins leave on (``NPY_ENABLE_CPU_FEATURES``, ``NPY_DISABLE_CPU_FEATURES``), e.g.
    ``X86_V3``; elsewhere the list of enabled CPU features. Read from the environment as well as from numpy, so a
    process that loaded numpy before the pins still names the level its workers compute at."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # another numpy layout: say so rather than guess
        return "unknown"

    def names(variable: str) -> set[str]:
        return set(os.environ.get(variable, "").replace(",", " ").split())

    allowed, disabled = names("NPY_ENABLE_CPU_FEATURES"), names("NPY_DISABLE_CPU_FEATURES")

    def on(feature: str) -> bool:
        return bool(features.get(feature)) and feature not in disabled and (not allowed or feature in allowed)

    levels = [level for level in ("X86_V4", "X86_V3", "X86_V2") if level in features]
    if levels:
        return next((level for level in levels if on(level)), "X86_V1")
    return ",".join(sorted(k for k in features if on(k)))


_STATIC: dict[str, dict[str, Any]] = {}
_STATIC_LOCK = threading.Lock()
_HOOKS: dict[str, list[str]] = {}
_FACTS_HOOK = "cache_key_facts"


def _static_environment(module: str) -> dict[str, Any]:
    """The part of :func:`environment` fixed for a process's life: code, Python, packages, FFmpeg (memoised: a worker
    runs the code it loaded, whatever later happens to the files)."""
    with _STATIC_LOCK:  # once per process: also, ast.parse is not safe in two threads at once (CPython 3.11)
        return _static_environment_unlocked(module)


def _static_environment_unlocked(module: str) -> dict[str, Any]:
    cached = _STATIC.get(module)
    if cached is None:
        names = external_imports(module, _PROJECT)
        cached = {"code": code_digest(module), "python": f"{platform.python_implementation()} "
                                                          f"{platform.python_version()}",
                  "packages": installed_versions(names)}
        if "av" in names:  # the decoders and encoders that read and write every frame
            av = importlib.import_module("av")
            cached["ffmpeg"] = {lib: ".".join(map(str, v)) for lib, v in sorted(av.library_versions.items())}
        files = import_closure(module, _PROJECT)
        _HOOKS[module] = sorted(module_name(rel) for rel in files if _defines_hook(_PROJECT / rel))
        _STATIC[module] = cached
    return cached


def _defines_hook(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == _FACTS_HOOK for node in tree.body)


def environment(stage: str, params: Any) -> dict[str, Any]:
    """What computes ``stages.<stage>`` in this process, as this process sees it (see the module docstring).

    ``facts`` holds what each module of the closure that defines ``cache_key_facts(params)`` returns for the stage's
    params block: found by reading the closure's files, so a module takes part exactly when the stage runs its code.
    """
    module = f"stages.{stage}"
    env = dict(_static_environment(module))
    env["kernel_pins"] = kernel_level()  # the same words on every CPU pinned alike (pipeline.kernels)
    env["cpu_level"] = cpu_level()
    env["facts"] = {name: importlib.import_module(name).cache_key_facts(params) for name in _HOOKS[module]}
    return json.loads(_json(env))  # plain JSON values, as the key hashes them and a task carries them


def environment_difference(client: Mapping[str, Any], worker: Mapping[str, Any], limit: int = 3) -> list[str]:
    """What differs between two :func:`environment` values, one short phrase per leaf (at most ``limit``)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            out.append(f"{path} {_short(b)} (client: {_short(a)})")

    walk(client, worker, "")
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def _short(value: Any) -> str:
    text = "missing" if value is None else str(value)
    return text if len(text) <= 24 else f"{text[:12]}…"


# --- content hashes and the file-hash memo -------------------------------------------------------------------------

def table_digest(table: pa.Table) -> str:
    """Content hash of a table's rows (schema metadata ignored): the same rows give the same hash."""
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


#: File systems where SQLite's locking cannot be trusted (POSIX locks over the network, no shared memory for WAL).
NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "lustre", "gpfs", "ceph",
                        "fuse.ceph", "glusterfs", "fuse.glusterfs", "beegfs", "afs", "fuse.s3fs", "fuse.gcsfuse")


def file_system_type(path: Path, mounts: str | None = None) -> str:
    """The type of the file system holding ``path`` (from ``/proc/mounts``, or ``mounts`` in that format)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8")
        except OSError:  # not Linux: nothing known
            return "unknown"
    target = str(path.resolve() if path.exists() else path.absolute())
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def memo_location(root: Path, mounts: str | None = None) -> Path:
    """Where the file-hash memo of cache ``root`` lives: inside it (``file-digests.sqlite``), unless the cache is on a
    network file system, where SQLite's locks and WAL's shared memory are unsafe: then in this machine's user cache
    (``$XDG_CACHE_HOME/wflwv``, one file per cache folder; it holds only this machine's stat results anyway)."""
    if file_system_type(root, mounts) not in NETWORK_FILE_SYSTEMS:
        return root / "file-digests.sqlite"
    local = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wflwv"
    return local / f"file-digests-{hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:16]}.sqlite"


def _stat_key(st: os.stat_result) -> str:
    # ctime too: a rewrite of the same size with its mtime set back still moves ctime, which no user can set
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


class _DigestMemo:
    """SHA-256 of files, remembered per (path, size, mtime, ctime, inode), like DVC's state database.

    One SQLite connection per thread (a connection may not cross threads) in WAL mode, so readers in other threads
    and processes never wait for a writer.
    """

    def __init__(self, root: Path) -> None:
        self.path = memo_location(root)
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=60)
                db.execute("pragma journal_mode=wal")
                db.execute("create table if not exists digests (path text primary key, stat text, sha256 text)")
            except (OSError, sqlite3.Error) as err:
                raise _fault(self.path, "open the file-hash memo", err) from None
            self._local.db = db
        return db

    def get(self, path: Path) -> str:
        real = path.resolve()
        stat = _stat_key(real.stat())
        try:
            row = self._db().execute("select stat, sha256 from digests where path = ?", (str(real),)).fetchone()
        except sqlite3.Error as err:
            raise _fault(self.path, "read the file-hash memo", err) from None
        if row and row[0] == stat:
            return str(row[1])
        digest = sha256_file(real)
        if _stat_key(real.stat()) == stat:  # else it changed while being read: do not remember either version
            self._put(str(real), stat, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Record the digest of a file just written (so its first lookup does not read it again)."""
        real = path.resolve()
        self._put(str(real), _stat_key(real.stat()), digest)

    def _put(self, path: str, stat: str, digest: str) -> None:
        db = self._db()
        try:
            with db:
                db.execute("insert or replace into digests values (?, ?, ?)", (path, stat, digest))
        except sqlite3.Error as err:
            raise _fault(self.path, "write the file-hash memo", err) from None

    def prune(self) -> int:
        """Forget rows whose file is gone or changed (they can never match again); return how many."""
        db = self._db()
        stale = []
        for path, stat in db.execute("select path, stat from digests").fetchall():
            try:
                now = _stat_key(os.stat(path))
            except OSError:
                now = None
            if now != stat:
                stale.append((path,))
        with db:
            db.executemany("delete from digests where path = ?", stale)
        return len(stale)


_MEMOS: dict[Path, _DigestMemo] = {}
_MEMOS_LOCK = threading.Lock()


def _memo(cache: Path) -> _DigestMemo:
    with _MEMOS_LOCK:
        memo = _MEMOS.get(cache)
        if memo is None:
            memo = _MEMOS[cache] = _DigestMemo(cache)
        return memo


def file_digest(path: str | os.PathLike[str], cache: Path) -> str:
    """SHA-256 of a file's content, read again only when its size, mtime, ctime or inode changed.

    Raises:
        OSError: the file cannot be read.
        CacheError: the memo in ``cache`` cannot be read or written.
    """
    return _memo(cache).get(Path(path))


# --- locks ---------------------------------------------------------------------------------------------------------

@contextmanager
def cache_lock(root: Path, exclusive: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold the cache's lock (``<root>/.lock``, flock): stages hold it shared while they run, prune exclusively, so
    prune never removes what a running stage looks up or stores.

    Raises:
        CacheBusy: ``wait`` is False and the lock is held in a conflicting way.
        CacheError: the lock file cannot be created.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / _LOCK, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise _fault(root / _LOCK, "open the run cache's lock", err) from None
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheBusy(f"{root / _LOCK}: the run cache is in use by a running stage; try again when it has "
                            "finished") from None
        yield
    finally:
        os.close(fd)


def _remove_tree(path: Path, root: Path) -> None:
    """Delete a folder of the cache: renamed into ``<root>/.trash`` first (one atomic step), then removed, so a kill
    at any moment leaves either the whole folder or none of it where readers look."""
    trash = root / _TRASH
    trash.mkdir(exist_ok=True)
    doomed = trash / f"{path.name}~{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return  # another process removed it first
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- entries -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedVideo:
    """A finished, checked entry: the status row, and where its per-frame rows and media are."""

    key: str
    status: dict[str, Any]
    folder: Path
    pieces: tuple[str, ...] = ()

    @property
    def frames(self) -> Path | None:
        return self.folder / _FRAMES if _FRAMES in self.pieces else None

    @property
    def media(self) -> list[Path]:
        return [self.folder / name for name in self.pieces if name.startswith("media/")]


@dataclass(frozen=True)
class StageCache:
    """The entries of one stage under one fingerprint (code, params, environment).

    ``environment`` is the client's :func:`environment`; tasks compare their worker's with it. ``params`` is the
    stage's params block (what ``cache_key_facts`` hooks read on the worker).
    """

    root: Path
    stage: str
    fingerprint: str
    environment: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    params: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def for_stage(cls, root: Path, stage: str, params: Any) -> StageCache:
        """The cache of ``stages.<stage>`` with its params block (a pydantic model or plain data)."""
        dumped = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
        env = environment(stage, params)
        fingerprint = _sha256(_json({"stage": stage, "params": dumped, "environment": env, "schema": SCHEMA_VERSION,
                                     "entry_format": ENTRY_FORMAT}))
        return cls(root, stage, fingerprint, env, params)

    @property
    def folder(self) -> Path:
        return self.root / self.stage

    def key(self, video_id: str, inputs: Mapping[str, Any]) -> str:
        """The key of one video: the stage fingerprint, the id and the video's input digests/arguments."""
        return _sha256(self.fingerprint.encode(), video_id.encode(), _json(dict(inputs)))

    def entry(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def lookup(self, key: str) -> CachedVideo | None:
        """The finished entry of ``key`` with every piece checked, or None.

        An entry whose index or a piece is missing, damaged or changed is discarded (logged) and counts as missing, so
        the video is computed again.

        Raises:
            CacheError: the entry cannot be read for a reason of this run (EIO, EMFILE…); it is left as it is.
        """
        folder = self.entry(key)
        try:
            raw = (folder / _INDEX).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            if folder.is_dir():
                self.discard(folder, f"{_INDEX} is missing")
            return None
        except OSError as err:
            raise _fault(folder / _INDEX, "read the run cache entry", err) from None
        try:
            index = json.loads(raw)
            status, pieces = dict(index["status"]), list(index["pieces"])
            if index["key"] != key:
                raise ValueError("another key")
        except (ValueError, KeyError, TypeError) as err:
            self.discard(folder, f"{_INDEX} is damaged ({err})")
            return None
        for piece in pieces:
            problem = self._piece_problem(folder, piece)
            if problem:
                self.discard(folder, problem)
                return None
        try:
            os.utime(folder)  # last use, for pruning by age and by size
        except OSError:
            pass  # advisory: a cache this run cannot touch fails where it stores
        return CachedVideo(key, status, folder, tuple(str(p["name"]) for p in pieces))

    def _piece_problem(self, folder: Path, piece: Any) -> str | None:
        try:
            name, size, digest = str(piece["name"]), int(piece["size"]), str(piece["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"{_INDEX} lists a damaged piece {piece!r}"
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return f"{_INDEX} names a piece outside the entry: {name!r}"
        path = folder.joinpath(*rel.parts)
        try:
            actual = path.stat().st_size
            if actual != size:
                return f"{name} has {actual} bytes, {size} were stored"
            if file_digest(path, self.root) != digest:
                return f"{name} differs from what was stored (SHA-256)"
        except (FileNotFoundError, NotADirectoryError):
            return f"{name} is missing"
        except OSError as err:
            raise _fault(path, "read the run cache entry", err) from None
        return None

    def discard(self, folder: Path, why: str) -> None:
        """Remove a damaged entry (renamed away first) and say so."""
        log.warning("%s: run cache entry %s discarded: %s; the video is computed again", self.stage, folder.name, why)
        try:
            _remove_tree(folder, self.root)
        except OSError as err:
            raise _fault(folder, "discard a damaged run cache entry", err) from None

    def clear_abandoned(self, key: str = "*") -> int:
        """Remove the temporary folders (of ``key``, or of every key) whose attempt has died; return how many.

        A live attempt holds an flock on its lock file ``<name>.lock`` beside its folder, on whatever host or in
        whatever container it runs; a lock that can be taken belongs to a dead process (the kernel, or for NFS the
        server's lease, releases it), so only dead attempts' folders go.
        """
        tmp = self.folder / ".tmp"
        if not tmp.is_dir():
            return 0
        count = 0
        for lock in tmp.glob(f"{key}~*.lock"):
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # finished meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live attempt
                shutil.rmtree(lock.with_name(lock.name.removesuffix(".lock")), ignore_errors=True)
                lock.unlink(missing_ok=True)
                count += 1
            finally:
                os.close(fd)
        now = time.time()
        for folder in tmp.glob(f"{key}~*"):
            if folder.is_dir() and not folder.with_name(folder.name + ".lock").exists():
                try:
                    old = now - folder.stat().st_mtime > _UNLOCKED_GRACE_S
                except FileNotFoundError:
                    continue
                if old:
                    shutil.rmtree(folder, ignore_errors=True)
                    count += 1
        for pending in tmp.glob(f".{key}~*.locking"):  # died between creating its lock file and naming it
            try:
                if now - pending.stat().st_mtime > _UNLOCKED_GRACE_S:
                    pending.unlink()
            except FileNotFoundError:
                pass
        return count

    def record_outputs(self, outputs: Iterable[Path | None], keys: Iterable[str]) -> None:
        """Remember that ``keys`` built these output files (by MD5, as ``dvc.lock`` names them), so that prune keeps
        the entries behind the current outputs and behind any committed ``dvc.lock``."""
        keys = set(keys)
        project = Path.cwd().resolve()  # every stage runs in its project's root
        for path in outputs:
            if path is None or not Path(path).is_file():
                continue
            md5 = _md5_file(Path(path))
            record = self.folder / _OUTPUTS / f"{md5}.json"
            try:
                old = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
            resolved = Path(path).resolve()
            rel = str(resolved.relative_to(project)) if resolved.is_relative_to(project) else str(resolved)
            merged = {"stage": self.stage, "md5": md5, "path": rel,
                      "projects": sorted(set(old.get("projects", [])) | {str(project)}),
                      "keys": sorted(set(old.get("keys", [])) | keys)}
            try:
                with atomic_path(record) as tmp:
                    tmp.write_text(json.dumps(merged), encoding="utf-8")
            except OSError as err:
                raise _fault(record, "record which run cache entries built an output", err) from None


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - DVC's content address, not a security measure
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Attempt:
    """The private temporary folder of one attempt at one key, and the lock file that says it is alive.

    The lock file is created under a hidden name, locked, then renamed to ``<name>.lock``: no other process can ever
    find it unlocked while this attempt lives. The folder's name also says host and pid (for people reading it).
    """

    def __init__(self, cache: StageCache, key: str) -> None:
        tmp = cache.folder / ".tmp"
        name = f"{key}~{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:8]}"
        self.folder = tmp / name
        self.lock = tmp / f"{name}.lock"
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            pending = tmp / f".{name}.locking"
            # read-only: flock needs no write access, and a file open for writing would keep a remount read-only
            self._fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.rename(pending, self.lock)
            (self.folder / "media").mkdir(parents=True)
        except OSError as err:
            raise _fault(cache.folder, "write the run cache", err) from None

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.lock.unlink(missing_ok=True)
        except OSError:  # a cache that turned read-only: the lock, released below, lets a later run clear it
            pass
        os.close(self._fd)  # releases the lock last: a cleaner that gets it finds nothing left to remove


def run_cached(fn: Callable[..., dict[str, Any]], item: Any, cache: StageCache, key: str, frames_manifest: str | None,
               **kwargs: Any) -> dict[str, Any]:
    """Compute one video with ``fn(item, work_dir=..., **kwargs)`` and store it as entry ``key`` (on a worker).

    ``fn`` returns ``{"status": row, "rows": per-frame rows}`` and writes any media into ``work_dir``; a status row's
    ``path`` naming a file there is stored as the bare file name (the stage puts the file where its output goes).
    Only a fact (:func:`is_fact`) is stored; any other row is returned but not stored. Returns
    ``{"status": row, "stored": bool}``.

    Raises:
        CacheError: the entry cannot be written (full disk, no permission, read-only cache): the stage must end,
            since every further video would fail the same way and DVC must not commit the outputs.
    """
    attempt = _Attempt(cache, key)
    media = attempt.folder / "media"
    try:
        result = fn(item, work_dir=media, **kwargs)
        status = dict(result["status"])
        if status.get("path") and Path(status["path"]).parent == media:
            status["path"] = Path(status["path"]).name
        if not is_fact(status):
            return {"status": status, "stored": False}
        rows = result.get("rows")
        table = None
        if frames_manifest is not None:
            table = rows if isinstance(rows, pa.Table) else rows_table(rows or [], frames_manifest)
        try:
            _store(cache, key, attempt.folder, status, table)
        except OSError as err:
            raise _fault(attempt.folder, "store the run cache entry", err) from None
        return {"status": status, "stored": True}
    finally:
        attempt.close()


def _store(cache: StageCache, key: str, tmp: Path, status: dict[str, Any], table: pa.Table | None) -> None:
    """Write the entry in ``tmp`` (pieces, then their index), fsync it, and rename it into place."""
    if table is not None:
        write_table(table, tmp / _FRAMES)
    media = tmp / "media"
    files = ([tmp / _FRAMES] if table is not None else []) + sorted(p for p in media.iterdir() if p.is_file())
    pieces, digests = [], {}
    for path in files:
        name = path.relative_to(tmp).as_posix()
        digests[name] = sha256_file(path)
        _fsync(path)
        pieces.append({"name": name, "size": path.stat().st_size, "sha256": digests[name]})
    if not any(media.iterdir()):
        media.rmdir()
    else:
        _fsync(media, directory=True)
    index = tmp / _INDEX
    with open(index, "w", encoding="utf-8") as fh:
        json.dump({"format": ENTRY_FORMAT, "key": key, "status": status, "pieces": pieces}, fh, default=_plain)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync(tmp, directory=True)
    final = cache.entry(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)  # atomic: the entry exists whole or not at all
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.is_dir():
            return  # another run stored the same key first: theirs is as good
        raise
    _fsync(final.parent, directory=True)
    memo = _memo(cache.root)
    for name, digest in digests.items():  # renaming the folder leaves its files' stat as it was
        memo.remember(final.joinpath(*PurePosixPath(name).parts), digest)


def worker_refusal(cache: StageCache) -> str | None:
    """Why this dask worker must not compute tasks of ``cache``: its environment (:func:`environment`, thread pins
    included) differs from the client's; None when it is the same, or outside a dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None  # the client's own process: the key was computed here
    differences = environment_difference(cache.environment, environment(cache.stage, cache.params))
    threads = [f"thread pin {k}={os.environ.get(k)} (client: {v})" for k, v in SINGLE_THREAD_ENV.items()
               if os.environ.get(k) != v]
    differences += threads
    if not differences:
        return None
    return (f"worker {worker.name} ({worker.address}) refused the task: its environment differs from the client's: "
            f"{'; '.join(differences)}; start workers with `python -m pipeline.worker <scheduler>` from the same "
            "checkout and environment")


def run_job(job: Mapping[str, Any], fn: Callable[..., dict[str, Any]], cache: StageCache,
            frames_manifest: str | None, **kwargs: Any) -> dict[str, Any]:
    """:func:`run_cached` for a ``{"video_id", "item", "key"}`` job (a dask task), with its wall time and attempt
    number, on a worker whose environment is the client's (else a status row ``error`` that says what differs).
    A write fault comes back as ``{"output_fault": message}``: the client raises it (:class:`OutputError`).

    ``attempt`` > 1 means an earlier attempt of this key died with its process (a lost worker: dask ran the video
    again), which left its temporary folder behind.
    """
    started = time.monotonic()
    refusal = worker_refusal(cache)
    if refusal is not None:
        status = {"video_id": job.get("video_id"), "status": "error", "error": refusal}
        return {"status": status, "stored": False, "seconds": round(time.monotonic() - started, 3), "attempt": 1}
    try:
        attempt = 1 + cache.clear_abandoned(job["key"])
        result = run_cached(fn, job["item"], cache, job["key"], frames_manifest, **kwargs)
    except OutputError as err:  # a write fault (a CacheError, or the stage's own output): the client ends the stage
        # with it; returned rather than raised, so that dask does not log the worker's traceback around that line
        return {"output_fault": str(err)}
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


# --- the command: report and prune ---------------------------------------------------------------------------------

DOWNLOADS = "downloads"  # the download store's folder in the cache (pipeline.acquire.download)


def _stage_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _entries(root: Path) -> Iterable[tuple[str, Path]]:
    """``(stage, folder)`` of every entry, and of every stored download version (stage ``downloads``)."""
    for stage in _stage_folders(root):
        for shard in sorted(p for p in stage.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(p for p in shard.iterdir() if p.is_dir() and not p.name.startswith(".")):
                yield stage.name, entry


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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


@dataclass(eq=False)  # items are compared by identity: one per folder
class PruneItem:
    """One entry or stored download version, and what decides whether prune may remove it."""

    stage: str
    path: Path
    size: int
    last_use: float
    video_id: str | None
    current: bool  # a current output or a committed dvc.lock of a known project was built from it
    reachable: bool = True  # a download that can be fetched again as it was (entries can always be computed again)


class _Projects:
    """What the projects that used this cache were built from: their ``dvc.lock`` outputs and their current files."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = sorted({r.resolve() for r in roots if r.is_dir()})
        self.locked: set[str] = set()
        self.lock_files: list[Path] = []  # the committed versions of dvc.lock's outputs, found in the DVC cache
        for root in self.roots:
            for path, md5 in _lock_outputs(root):
                self.locked.add(md5)
                stored = _dvc_cache_file(root, md5)
                self.lock_files += [p for p in (stored, root / path) if p is not None and p.is_file()]
        self._md5: dict[Path, str | None] = {}

    def md5(self, path: Path) -> str | None:
        if path not in self._md5:
            try:
                self._md5[path] = _md5_file(path)
            except OSError:
                self._md5[path] = None
        return self._md5[path]

    def current(self, record: Mapping[str, Any]) -> bool:
        """Whether an output record is what a known project's dvc.lock names or what its file is now."""
        if record.get("md5") in self.locked:
            return True
        rel = str(record.get("path", ""))
        for project in record.get("projects", []):
            path = Path(rel) if Path(rel).is_absolute() else Path(project) / rel
            if path.is_file() and self.md5(path) == record.get("md5"):
                return True
        return False

    def downloads(self) -> tuple[set[tuple[str, str]], set[str]]:
        """``(video_id, sha256)`` of every ok row of the downloads manifests they were built from, and the ids whose
        latest download was ok (their source was reachable then)."""
        current: set[tuple[str, str]] = set()
        ok_ids: set[str] = set()
        import pyarrow.parquet as pq

        candidates = set(self.lock_files)
        for root in self.roots:
            candidates.update((root / "manifests").glob("*.parquet"))
        for path in sorted(candidates):
            try:
                pf = pq.ParquetFile(path)
                meta = pf.schema_arrow.metadata or {}
                if meta.get(b"manifest") != DOWNLOADS.encode():
                    continue
                rows = pf.read(columns=["video_id", "status", "sha256"]).to_pylist()
            except (OSError, pa.ArrowException, KeyError, ValueError):
                continue  # not a readable downloads manifest
            for row in rows:
                if row["status"] == "ok" and row["sha256"]:
                    current.add((row["video_id"], row["sha256"]))
                    ok_ids.add(row["video_id"])
        return current, ok_ids


def _lock_outputs(project: Path) -> list[tuple[str, str]]:
    """``(path, md5)`` of every file output in ``project/dvc.lock`` (folders, ``.dir`` hashes, are left out)."""
    import yaml

    try:
        lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for stage in (lock.get("stages") or {}).values():
        for item in (stage or {}).get("outs") or []:
            md5 = str(item.get("md5") or "")
            if item.get("path") and md5 and not md5.endswith(".dir"):
                out.append((str(item["path"]), md5))
    return out


def _dvc_cache_file(project: Path, md5: str) -> Path | None:
    """Where DVC keeps the committed content ``md5`` (its cache: ``.dvc/cache`` or ``cache.dir`` of .dvc/config)."""
    config = configparser.ConfigParser()
    config.read([project / ".dvc" / "config", project / ".dvc" / "config.local"])
    configured = config.get("cache", "dir", fallback=None)
    cache = (project / ".dvc" / configured) if configured else project / ".dvc" / "cache"
    for candidate in (cache / "files" / "md5" / md5[:2] / md5[2:], cache / md5[:2] / md5[2:]):  # DVC 3, DVC 2
        if candidate.is_file():
            return candidate
    return None


def _records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(root.glob(f"*/{_OUTPUTS}/*.json")):
        try:
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return out


def _entry_video(entry: Path) -> str | None:
    try:
        return str(json.loads((entry / _INDEX).read_text(encoding="utf-8"))["status"]["video_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def survey(root: Path, project: Path) -> list[PruneItem]:
    """Every entry and stored download version of the cache, with what prune needs to decide about it.

    Current: built into an output of ``project`` or of any other project that recorded outputs here (its ``dvc.lock``
    and its files now). A download that is not current is reachable when it can be fetched again as it was: a project
    file with the same SHA-256, or a web source whose latest download was ok.
    """
    records = _records(root)
    projects = _Projects([project, *(Path(p) for _, r in records for p in r.get("projects", []))])
    current_keys = {key for _, record in records if projects.current(record) for key in record.get("keys", [])}
    current_downloads, ok_ids = projects.downloads()
    items = []
    for stage, entry in _entries(root):
        if stage == DOWNLOADS:
            continue
        items.append(PruneItem(stage, entry, _size(entry), entry.stat().st_mtime, _entry_video(entry),
                               entry.name in current_keys))
    store = root / DOWNLOADS
    for id_folder in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if store.is_dir() else []:
        for version in sorted(p for p in id_folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                record = json.loads((version / f"{id_folder.name}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}  # a version without a record can never be reused: nothing to keep
            pair = (id_folder.name, str(record.get("sha256")))
            items.append(PruneItem(DOWNLOADS, version, _size(version), version.stat().st_mtime, id_folder.name,
                                   pair in current_downloads,
                                   not record or _reachable(record, id_folder.name, projects, ok_ids, root)))
    return items


def _reachable(record: Mapping[str, Any], video_id: str, projects: _Projects, ok_ids: set[str], cache: Path) -> bool:
    source = record.get("source") or {}
    if source.get("kind") == "file":  # a project file: the same bytes can be fetched again while it is unchanged
        for project in projects.roots:
            path = _project_file(str(record.get("url", "")), project)
            try:
                if path is not None and path.is_file() and file_digest(path, cache) == source.get("sha256"):
                    return True
            except OSError:
                continue
        return False
    return video_id in ok_ids  # a web source: reachable if the latest download reached it


def _project_file(url: str, project: Path) -> Path | None:
    """The file inside ``project`` that a ``file:`` URL names (as ``pipeline.sources.local_file`` reads it; that
    module is not imported here, so that editing it changes no stage's run cache key), else None."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme.lower() != "file" or parsed.netloc not in ("", "localhost"):
        return None
    rest = unquote(parsed.path if url.lower().startswith("file://") else url[len("file:"):])
    base = Path(os.path.abspath(project))
    target = Path(os.path.normpath(base / rest))
    return target if target.is_relative_to(base) else None


def plan_prune(items: list[PruneItem], older_than_days: float | None = None, max_bytes: int | None = None,
               stage: str | None = None, video_ids: Iterable[str] = (), include_unreachable: bool = False
               ) -> tuple[list[PruneItem], list[PruneItem]]:
    """``(to remove, kept although asked)``: what prune removes, and the items the rules keep.

    Never removed: what a current output or committed dvc.lock was built from. A download whose source is not
    reachable goes only with ``include_unreachable`` or when its video id is named. ``older_than_days`` removes by
    last use; ``max_bytes`` then removes least-recently-used items until the cache (the items not selected included)
    is that small. Named ``video_ids`` restrict prune to those videos (all ages unless limits are given).
    """
    ids = set(video_ids)
    selected = [i for i in items if (stage is None or i.stage == stage) and (not ids or i.video_id in ids)]
    allowed = [i for i in selected if not i.current and (i.reachable or include_unreachable or bool(ids))]
    kept = [i for i in selected if i.current or not (i.reachable or include_unreachable or ids)]
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    if cutoff is None and max_bytes is None and ids:
        cutoff = float("inf")
    chosen = [i for i in allowed if cutoff is not None and i.last_use <= cutoff]
    if max_bytes is not None:
        total = sum(i.size for i in items) - sum(i.size for i in chosen)
        taken = {id(i) for i in chosen}
        for item in sorted((i for i in allowed if id(i) not in taken), key=lambda i: i.last_use):
            if total <= max_bytes:
                break
            chosen.append(item)
            total -= item.size
    return chosen, kept


def prune(root: Path, older_than_days: float | None = None, stage: str | None = None, *, project: Path | None = None,
          max_bytes: int | None = None, video_ids: Iterable[str] = (), include_unreachable: bool = False,
          dry_run: bool = False) -> tuple[list[PruneItem], list[PruneItem]]:
    """Remove what :func:`plan_prune` chooses, under the cache's exclusive lock; return ``(removed, kept)``.

    Each entry is renamed away before it is deleted, so a kill mid-prune never leaves half an entry. Afterwards the
    file-hash memo forgets files that are gone, and output records whose entries are all gone are dropped.

    Raises:
        CacheBusy: a stage is running on this cache.
    """
    project = (project or Path.cwd()).resolve()
    if dry_run:
        return plan_prune(survey(root, project), older_than_days, max_bytes, stage, video_ids, include_unreachable)
    with cache_lock(root, exclusive=True, wait=False):
        shutil.rmtree(root / _TRASH, ignore_errors=True)  # what a killed prune was deleting
        chosen, kept = plan_prune(survey(root, project), older_than_days, max_bytes, stage, video_ids,
                                  include_unreachable)
        for item in chosen:
            _remove_tree(item.path, root)
            if item.stage == DOWNLOADS:
                try:
                    item.path.parent.rmdir()  # the id's folder, once it holds no version
                except OSError:
                    pass
        present = {entry.name for _, entry in _entries(root)}
        for path, record in _records(root):
            if not set(record.get("keys", [])) & present:
                path.unlink(missing_ok=True)
        if (root / "file-digests.sqlite").exists() or memo_location(root).exists():
            _memo(root).prune()
    return chosen, kept


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``500MB``, ``50 GiB`` or ``1e9``; raise ``ValueError`` with the accepted forms."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 500MB, 50GB, 2TiB)")
    return int(float(match.group(1)) * _UNITS[unit])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.runcache",
                                     description="Report or prune the per-video run cache (cache.dir in params, "
                                                 f"or ${CACHE_ENV}) and its download store.")
    parser.add_argument("--params", default="params.yaml", help="params file naming cache.dir (default: %(default)s)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("report", help="entries and size per stage")
    pr = sub.add_parser("prune", help="remove entries and stored downloads that nothing current was built from",
                        description="Removes entries and stored downloads not used for a while (--older-than) or "
                                    "beyond a size (--max-size, least recently used first). Never removes what the "
                                    "project's dvc.lock or current outputs were built from (nor those of other "
                                    "projects that share the cache). A stored download whose source can no longer be "
                                    "fetched goes only with --include-unreachable or when its video id is named.")
    pr.add_argument("video_ids", nargs="*", metavar="VIDEO_ID", help="only these videos (their unreachable "
                                                                         "downloads included)")
    pr.add_argument("--older-than", type=float, metavar="DAYS", help="days since last use (0 = any age)")
    pr.add_argument("--max-size", metavar="SIZE", help="then shrink the cache to SIZE, e.g. 200GB (default: "
                                                       "cache.max_size of params, if set)")
    pr.add_argument("--stage", help="only this stage's entries (downloads: the download store)")
    pr.add_argument("--include-unreachable", action="store_true",
                    help="also remove stored downloads whose source cannot be fetched again")
    pr.add_argument("--dry-run", action="store_true", help="list what would be removed and its size; remove nothing")
    pr.add_argument("--project", type=Path, default=Path.cwd(), help="the project whose outputs are kept "
                                                                     "(default: the working directory)")
    args = parser.parse_args(argv)
    from pipeline.params import ParamsError, stage_params

    try:
        cache_params = stage_params("cache", args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = cache_root(cache_params.dir)
    if args.cmd == "prune":
        configured = cache_params.max_size
        try:
            max_bytes = parse_size(args.max_size or str(configured)) if (args.max_size or configured) else None
        except ValueError as err:
            print(f"error: --max-size: {err}", file=sys.stderr)
            return 2
        if args.older_than is not None and args.older_than < 0:
            print("error: --older-than: must be >= 0 days", file=sys.stderr)
            return 2
        if args.older_than is None and max_bytes is None and not args.video_ids:
            print("error: prune needs --older-than DAYS, --max-size SIZE or video ids", file=sys.stderr)
            return 2
        try:
            chosen, kept = prune(root, args.older_than, args.stage, project=args.project, max_bytes=max_bytes,
                                 video_ids=args.video_ids, include_unreachable=args.include_unreachable,
                                 dry_run=args.dry_run)
        except CacheError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        verb = "would remove" if args.dry_run else "removed"
        if args.dry_run:
            for item in chosen:
                print(f"{verb} {item.path.relative_to(root)}  {item.size / 1e6:.1f} MB")
        entries = sum(1 for i in chosen if i.stage != DOWNLOADS)
        print(f"{verb} {entries} entries and {len(chosen) - entries} stored downloads "
              f"({sum(i.size for i in chosen) / 1e6:.1f} MB) from {root}")
        current = sum(1 for i in kept if i.current)
        unreachable = len(kept) - current
        print(f"kept {current} that current outputs were built from"
              + (f", {unreachable} stored downloads whose source is not reachable (--include-unreachable or their "
                 "ids remove them)" if unreachable else ""))
    print("\n".join(report(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
