"""Atomic Parquet manifests: write rows under a named schema, read them back checked."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.kernels import kernel_level
from pipeline.schemas import SCHEMA_VERSION, STATUSES, schema

#: The metadata key of the kernel level a manifest was computed at (:func:`pipeline.kernels.kernel_level`).
KERNEL_LEVEL_KEY = "kernel_level"

__all__ = [
    "ManifestError", "OutputError", "float_provenance", "atomic_path", "write_json", "sha256_file", "write_rows",
    "write_table", "rows_table", "ManifestWriter", "read_table", "open_manifest", "iter_videos", "iter_joined",
    "read_video", "points_array", "boxes_array", "rows_by_video",
]


class ManifestError(ValueError):
    """A manifest file is missing, unreadable or not the manifest expected; the message names the file."""


class OutputError(Exception):
    """An output location cannot be written (a file in the way, no permission, disk full): a fault of the run, never
    of a video; the message names the path and the stage ends with it in one line."""


class atomic_path:  # noqa: N801 - used as a context manager like open()
    """Context manager yielding a temporary sibling path that replaces ``path`` only on success."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (numpy scalars become floats)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=float))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _column(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


#: Packages whose float kernels produce model outputs; their versions are pinned by requirements.lock. OpenCV is
#: recorded under whichever of its distributions is installed.
_MODEL_RUNTIMES = ("numpy", "scipy", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
                   "opencv-contrib-python-headless", "onnxruntime", "onnx", "ai-edge-litert", "torch", "dlib-bin", "av",
                   "insightface")


def float_provenance() -> dict[str, str]:
    """What produced a float-model manifest: runtime package versions (the kernel level they were pinned to is the
    writer's ``kernel_level`` entry).

    Nothing here names the machine: the same pinned computation on another CPU kind writes the same bytes, so a
    dataset built elsewhere can be compared with the committed ``dvc.lock`` hash for hash; ``python -m
    pipeline.compare`` tells whether two runs agree within the stated tolerance where they do not.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in _MODEL_RUNTIMES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {"produced_by": json.dumps(versions, sort_keys=True)}


def rows_table(rows: Iterable[Mapping[str, Any]], name: str, metadata: Mapping[str, str] | None = None) -> pa.Table:
    """Rows (dicts keyed by column) as a table of manifest ``name``, checked.

    ``metadata`` is added to the schema's metadata (e.g. :func:`float_provenance` for model outputs). Missing
    nullable columns become nulls; unknown keys and statuses outside ``schemas.STATUSES`` raise ``ValueError``.
    """
    sch = schema(name)
    rows = list(rows)
    unknown = {k for r in rows for k in r} - set(sch.names)
    if unknown:
        raise ValueError(f"{name}: unknown columns {sorted(unknown)}")
    if "status" in sch.names:
        bad = sorted({str(r.get("status")) for r in rows} - set(STATUSES))
        if bad:
            raise ValueError(f"{name}: unknown status value(s) {bad}; allowed: {list(STATUSES)}")
    if "error" in sch.names:
        # messages name project files relative to the project root (every stage's working directory), so the same
        # failure gives the same manifest in every clone, wherever it lives
        root = f"{Path.cwd().resolve()}{os.sep}"
        rows = [dict(r, error=r["error"].replace(root, "")) if isinstance(r.get("error"), str) else r for r in rows]
    columns = {f.name: [_column(r.get(f.name)) for r in rows] for f in sch}
    return pa.Table.from_pydict(columns, schema=_with_metadata(sch, metadata))


def _with_metadata(sch: pa.Schema, metadata: Mapping[str, str] | None) -> pa.Schema:
    # every manifest says at which SIMD level its values were computed (pipeline/kernels.py), in words that are the
    # same on every CPU pinned alike, so a manifest's bytes do not name the machine; pipeline.compare shows it
    extra = {KERNEL_LEVEL_KEY: json.dumps(kernel_level(), sort_keys=True), **(metadata or {})}
    return sch.with_metadata({**sch.metadata, **{k.encode(): v.encode() for k, v in extra.items()}})


def write_rows(rows: Iterable[Mapping[str, Any]], name: str, path: str | os.PathLike[str],
               metadata: Mapping[str, str] | None = None) -> pa.Table:
    """Write ``rows`` as manifest ``name`` to ``path``, atomically (see :func:`rows_table`)."""
    table = rows_table(rows, name, metadata)
    write_table(table, path)
    return table


class ManifestWriter:
    """Write manifest ``name`` piece by piece, one row group per :meth:`write`, in constant memory.

    The file appears (atomically) only when the ``with`` block ends without an error; with no piece written it is an
    empty manifest with its schema. Write pieces in ``video_id`` order, one video per piece, so that readers can take
    one video at a time (:func:`iter_videos`, :func:`read_video`).
    """

    def __init__(self, path: str | os.PathLike[str], name: str, metadata: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.schema = _with_metadata(schema(name), metadata)
        self._atomic = atomic_path(path)
        self.rows = 0

    def __enter__(self) -> ManifestWriter:
        tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        return self

    def write(self, piece: pa.Table | Iterable[Mapping[str, Any]]) -> None:
        """Append one piece (a table of this manifest, or rows) as its own row group; empty pieces are skipped."""
        table = piece if isinstance(piece, pa.Table) else rows_table(piece, self.name)
        if table.num_rows:
            self._writer.write_table(table.select(self.schema.names).cast(self.schema), row_group_size=1 << 30)
            self.rows += table.num_rows

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._writer.close()
        self._atomic.__exit__(exc_type, exc, tb)


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a table atomically (temporary sibling, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _check(path: str | os.PathLike[str], name: str, sch: pa.Schema) -> None:
    meta = {k.decode(): v.decode() for k, v in (sch.metadata or {}).items()}
    if meta.get("manifest") != name:
        raise ManifestError(f"{path}: expected a {name!r} manifest, found {meta.get('manifest')!r}")
    if meta.get("schema_version", "").split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ManifestError(
            f"{path}: schema version {meta.get('schema_version')} is not compatible with {SCHEMA_VERSION}")
    missing = set(schema(name).names) - set(sch.names)
    if missing:
        raise ManifestError(f"{path}: missing columns {sorted(missing)}")


def read_table(path: str | os.PathLike[str], name: str, columns: list[str] | None = None) -> pa.Table:
    """Read manifest ``name`` from ``path``; raise :class:`ManifestError` naming the file if it is not that manifest.

    For per-frame manifests prefer :func:`iter_videos`: it holds one video at a time.
    """
    pf = open_manifest(path, name)
    return pf.read(columns=columns)


def open_manifest(path: str | os.PathLike[str], name: str) -> pq.ParquetFile:
    """Open manifest ``name`` without reading its rows; the same checks and one-line errors as :func:`read_table`."""
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found (run the stage that writes it)") from None
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(f"{path}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
    _check(path, name, pf.schema_arrow)
    return pf


def _video_runs(table: pa.Table) -> list[tuple[str, int, int]]:
    """``(video_id, start, stop)`` of each run of equal consecutive ids."""
    ids = table.column("video_id").to_pylist()
    runs: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            runs.append((ids[start], start, i))
            start = i
    return runs


def _by_frame(table: pa.Table) -> pa.Table:
    return table.sort_by("frame") if "frame" in table.column_names else table


def iter_videos(path: str | os.PathLike[str], name: str,
                columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(video_id, rows sorted by frame)`` of a manifest written in video order, one row group at a time.

    Memory is bounded by the largest video, whatever the file's size. A file whose videos are not contiguous (not
    written in video order) raises :class:`ManifestError`.
    """
    pf = open_manifest(path, name)
    if columns is not None and "video_id" not in columns:
        columns = ["video_id", *columns]
    done: set[str] = set()
    pending: list[pa.Table] = []
    pending_id: str | None = None
    for group in range(pf.num_row_groups):
        table = pf.read_row_group(group, columns=columns)
        for vid, start, stop in _video_runs(table):
            if vid == pending_id:
                pending.append(table.slice(start, stop - start))
                continue
            if pending_id is not None:
                yield pending_id, _by_frame(pa.concat_tables(pending))
                done.add(pending_id)
            if vid in done:
                raise ManifestError(f"{path}: rows of video {vid!r} are not contiguous; the file was not written "
                                    "in video order (rebuild it with `dvc repro`)")
            pending_id, pending = vid, [table.slice(start, stop - start)]
    if pending_id is not None:
        yield pending_id, _by_frame(pa.concat_tables(pending))


def iter_joined(*manifests: tuple[str | os.PathLike[str], str]) -> Iterator[tuple[str, list[pa.Table | None]]]:
    """Walk several per-frame manifests written in video order side by side: yield ``(video_id, [rows or None per
    manifest])`` for every id in any of them, in id order, holding one video of each at a time."""
    streams = [iter_videos(path, name) for path, name in manifests]
    heads: list[tuple[str, pa.Table] | None] = [next(s, None) for s in streams]
    while any(h is not None for h in heads):
        vid = min(h[0] for h in heads if h is not None)
        tables: list[pa.Table | None] = []
        for i, head in enumerate(heads):
            if head is not None and head[0] == vid:
                tables.append(head[1])
                heads[i] = next(streams[i], None)
                if heads[i] is not None and heads[i][0] < vid:  # type: ignore[index]
                    raise ManifestError(f"{manifests[i][0]}: videos are not in id order (rebuild it with `dvc repro`)")
            else:
                tables.append(None)
        yield vid, tables


def read_video(path: str | os.PathLike[str], name: str, video_id: str,
               columns: list[str] | None = None) -> pa.Table:
    """One video's rows (sorted by frame), reading only the row groups whose statistics may hold it."""
    pf = open_manifest(path, name)
    index = pf.schema_arrow.get_field_index("video_id")
    pieces = []
    for group in range(pf.num_row_groups):
        stats = pf.metadata.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max and not (stats.min <= video_id <= stats.max):
            continue
        table = pf.read_row_group(group, columns=columns if columns is None or "video_id" in columns
                                  else ["video_id", *columns])
        pieces.append(table.filter(pc.equal(table.column("video_id"), video_id)))
    if not pieces:
        return pf.schema_arrow.empty_table().select(columns) if columns else pf.schema_arrow.empty_table()
    return _by_frame(pa.concat_tables(pieces))


def points_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Turn a column of equal-length point lists into a float32 array of shape ``(rows, points, 2)``."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0, 2), np.float32)
    flat = arr.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(arr), -1, 2)


def boxes_array(table: pa.Table) -> np.ndarray:
    """The ``x1, y1, x2, y2`` columns of a table as a float32 array of shape ``(rows, 4)``."""
    return np.stack([table.column(k).to_numpy() for k in ("x1", "y1", "x2", "y2")], axis=1).astype(np.float32)


def rows_by_video(table: pa.Table) -> dict[str, pa.Table]:
    """Split a per-frame table into ``{video_id: rows sorted by frame}``."""
    out: dict[str, pa.Table] = {}
    ids = table.column("video_id").to_pylist()
    for vid in dict.fromkeys(ids):
        mask = pc.equal(table.column("video_id"), vid)
        sub = table.filter(mask)
        if "frame" in sub.column_names:
            sub = sub.sort_by("frame")
        out[vid] = sub
    return out
