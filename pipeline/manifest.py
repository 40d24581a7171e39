"""Atomic Parquet manifests: write rows under a named schema, read them back checked."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.schemas import SCHEMA_VERSION, STATUSES, schema

__all__ = [
    "ManifestError", "float_provenance", "atomic_path", "write_json", "sha256_file", "write_rows", "write_table",
    "read_table", "points_array", "boxes_array", "rows_by_video",
]


class ManifestError(ValueError):
    """A manifest file is missing, unreadable or not the manifest expected; the message names the file."""


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


#: Packages whose float kernels produce model outputs; their versions are pinned by requirements.lock.
_MODEL_RUNTIMES = ("numpy", "opencv-python", "onnxruntime", "ai-edge-litert", "torch", "dlib-bin", "av")


def float_provenance() -> dict[str, str]:
    """What produced a float-model manifest: runtime package versions and the CPU's SIMD features.

    Model runtimes (onnxruntime, LiteRT/XNNPACK, torch) pick kernels by CPU feature at run time, so their outputs can
    differ in the last bits between machines; the metadata says which machine a manifest came from, and
    ``python -m pipeline.compare`` tells whether two runs agree within the stated tolerance.
    """
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in _MODEL_RUNTIMES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    try:
        from numpy._core._multiarray_umath import __cpu_features__

        features = sorted(k for k, on in __cpu_features__.items() if on)
    except ImportError:  # another numpy layout: say so rather than guess
        features = ["unknown"]
    return {"produced_by": json.dumps(versions, sort_keys=True), "cpu_features": ",".join(features)}


def write_rows(rows: Iterable[Mapping[str, Any]], name: str, path: str | os.PathLike[str],
               metadata: Mapping[str, str] | None = None) -> pa.Table:
    """Write ``rows`` (dicts keyed by column) as manifest ``name`` to ``path``, atomically.

    ``metadata`` is added to the schema's metadata (e.g. :func:`float_provenance` for model outputs).

    Missing nullable columns become nulls; unknown keys and statuses outside ``schemas.STATUSES`` raise
    ``ValueError``.
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
    if metadata:
        sch = sch.with_metadata({**sch.metadata, **{k.encode(): v.encode() for k, v in metadata.items()}})
    table = pa.Table.from_pydict(columns, schema=sch)
    write_table(table, path)
    return table


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a table atomically (temporary sibling, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike[str], name: str) -> pa.Table:
    """Read manifest ``name`` from ``path``; raise :class:`ManifestError` naming the file if it is not that manifest."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found (run the stage that writes it)") from None
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(f"{path}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("manifest") != name:
        raise ManifestError(f"{path}: expected a {name!r} manifest, found {meta.get('manifest')!r}")
    if meta.get("schema_version", "").split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ManifestError(
            f"{path}: schema version {meta.get('schema_version')} is not compatible with {SCHEMA_VERSION}")
    missing = set(schema(name).names) - set(table.column_names)
    if missing:
        raise ManifestError(f"{path}: missing columns {sorted(missing)}")
    return table


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
