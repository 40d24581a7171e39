"""Compare the manifests of two runs (two machines, two clones): exact where the pipeline is exact, and per frame how
far the float values moved.

    python -m pipeline.compare manifests/ /other/clone/manifests/

Rows are matched by their key (``video_id``, ``frame``, ``track_id``, ``model``, whichever the manifest has). Every
other non-float column (statuses, subsets, valid flags, detectors, errors) must be equal. Float columns (boxes, points,
scores) are compared per row: a row is *beyond tolerance* when any of its values moved by more than
:data:`TOLERANCE` (pixels for boxes and points, the column's own unit otherwise) or is missing on one side only.
One line per manifest: its verdict, the rows beyond tolerance, the largest difference and the column that holds it,
and the kernel level each side was computed at when they differ (``kernel_level`` metadata, ``pipeline.kernels``).

Exit status: 0 when every manifest is identical or within tolerance; 1 when ids, statuses, subsets, valid flags or any
other exact column differ, or a manifest is on one side only; 3 when only float values are beyond tolerance. A
missing folder, one without manifests, or an unreadable file is one line and status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["TOLERANCE", "KEY_COLUMNS", "Comparison", "compare_tables", "compare_dirs", "main"]

#: Largest float difference accepted between two machines' runs: 0.05 px for coordinates (a model kernel's last-bit
#: differences move points by ~1e-4 px; a tracker or consensus decision flipping moves them by pixels).
TOLERANCE = 0.05
#: Columns that identify a row, in sort order (those a manifest has).
KEY_COLUMNS = ("video_id", "frame", "track_id", "model")
#: The verdicts, from best to worst; the exit status follows the worst.
VERDICTS = ("identical", "within_tolerance", "beyond_tolerance", "different")


@dataclass(frozen=True)
class Comparison:
    """Outcome for one manifest.

    Attributes:
        name: the manifest's file name.
        verdict: ``identical`` (same values), ``within_tolerance``, ``beyond_tolerance`` (same rows and exact
            columns, some float values moved more than the tolerance) or ``different`` (rows, ids or an exact column
            differ; ``reason`` says which first).
        max_float_diff: the largest float difference over matched rows (``inf`` where a value is on one side only,
            NaN where no float was compared).
        rows: rows compared; ``rows_beyond``: how many of them are beyond tolerance.
        worst_column: the float column holding ``max_float_diff``.
        kernel_levels: each side's ``kernel_level`` metadata, where they differ.
    """

    name: str
    verdict: str
    max_float_diff: float
    reason: str = ""
    rows: int = 0
    rows_beyond: int = 0
    worst_column: str = ""
    kernel_levels: tuple[str, str] | None = field(default=None)

    def line(self, tolerance: float) -> str:
        """The one-line report of this manifest."""
        parts = [f"{self.name}: {self.verdict}"]
        if self.rows and not np.isnan(self.max_float_diff):
            worst = f", largest {self.max_float_diff:.3g}" + (f" in {self.worst_column}" if self.worst_column else "")
            parts.append(f" ({self.rows_beyond} of {self.rows} rows beyond {tolerance:g}{worst})")
        if self.reason:
            parts.append(f": {self.reason}")
        if self.kernel_levels:
            parts.append(f"; kernel levels differ: {self.kernel_levels[0]} vs {self.kernel_levels[1]}")
        return "".join(parts)


def _is_float(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def _flat_with_rows(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Every float value of a (possibly nested list) column, and the row each comes from (nulls as NaN)."""
    arr = column.combine_chunks()
    rows = np.arange(len(arr))
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        rows = rows[parents]
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).astype(np.float64), rows


def _row_differences(a: pa.ChunkedArray, b: pa.ChunkedArray, n: int) -> np.ndarray:
    """Per row, the largest absolute difference between two float columns; ``inf`` where a value (or a list's
    length) is on one side only."""
    xa, ra = _flat_with_rows(a)
    xb, rb = _flat_with_rows(b)
    worst = np.zeros(n)
    counts_a, counts_b = np.bincount(ra, minlength=n), np.bincount(rb, minlength=n)
    same_shape = counts_a == counts_b
    worst[~same_shape] = np.inf
    xa, ra = xa[same_shape[ra]], ra[same_shape[ra]]
    xb = xb[same_shape[rb]]
    nan_a, nan_b = np.isnan(xa), np.isnan(xb)
    diff = np.where(nan_a | nan_b, np.where(nan_a == nan_b, 0.0, np.inf), np.abs(xa - xb))
    np.maximum.at(worst, ra, diff)
    return worst


def _kernel_level(table: pa.Table) -> str:
    return (table.schema.metadata or {}).get(b"kernel_level", b"unrecorded").decode()


def compare_tables(name: str, a: pa.Table, b: pa.Table, tolerance: float = TOLERANCE) -> Comparison:
    """Compare two tables of one manifest: rows matched by :data:`KEY_COLUMNS`, exact columns equal, float columns
    per row within ``tolerance`` (see :class:`Comparison`)."""
    levels = (_kernel_level(a), _kernel_level(b))
    levels_differ = levels if levels[0] != levels[1] else None
    if a.column_names != b.column_names:
        return Comparison(name, "different", float("nan"), f"columns {a.column_names} != {b.column_names}",
                          kernel_levels=levels_differ)
    keys = [k for k in KEY_COLUMNS if k in a.column_names]
    if keys:
        order = [(k, "ascending") for k in keys]
        a, b = a.sort_by(order), b.sort_by(order)
        ids_a, ids_b = (set(zip(*(t.column(k).to_pylist() for k in keys))) for t in (a, b))
        if a.num_rows != b.num_rows or ids_a != ids_b:
            only_a, only_b = len(ids_a - ids_b), len(ids_b - ids_a)
            return Comparison(name, "different", float("nan"),
                              f"ids differ ({'/'.join(keys)}): {only_a} only in the first, {only_b} only in the second"
                              + ("" if a.num_rows == len(ids_a) and b.num_rows == len(ids_b) else ", or repeated"),
                              kernel_levels=levels_differ)
    elif a.num_rows != b.num_rows:
        return Comparison(name, "different", float("nan"), f"{a.num_rows} rows != {b.num_rows} rows",
                          kernel_levels=levels_differ)
    n = a.num_rows
    exact_reasons = []
    worst_rows = np.zeros(n)
    floats = [c for c in a.column_names if _is_float(a.schema.field(c).type)]
    worst, worst_column = (float("nan") if n == 0 or not floats else 0.0), ""
    for col in a.column_names:
        if col in floats:
            per_row = _row_differences(a.column(col), b.column(col), n)
            worst_rows = np.maximum(worst_rows, per_row)
            if n and (np.isnan(worst) or per_row.max() > worst):
                worst, worst_column = float(per_row.max()), col
        elif not a.column(col).equals(b.column(col)):
            differing = sum(x != y for x, y in zip(a.column(col).to_pylist(), b.column(col).to_pylist()))
            exact_reasons.append(f"column {col} differs in {differing} of {n} rows")
    beyond = int((worst_rows > tolerance).sum())
    if exact_reasons:
        verdict = "different"
    elif beyond:
        verdict = "beyond_tolerance"
    else:
        verdict = "within_tolerance" if worst > 0 else "identical"
    return Comparison(name, verdict, worst, "; ".join(exact_reasons), rows=n, rows_beyond=beyond,
                      worst_column=worst_column if worst and worst > 0 else "", kernel_levels=levels_differ)


def compare_dirs(a: Path, b: Path, tolerance: float = TOLERANCE) -> list[Comparison]:
    """Compare every ``*.parquet`` manifest of folder ``a`` with its namesake in ``b`` (one only in ``b`` is a
    difference too). A folder that is missing or holds no manifest, or a file that is not Parquet, is a one-line
    ``ValueError``."""
    for folder in (a, b):
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder")
        if not any(folder.glob("*.parquet")):
            raise ValueError(f"{folder}: no manifest (*.parquet) in this folder")
    out = []
    for name in sorted({p.name for p in a.glob("*.parquet")} | {p.name for p in b.glob("*.parquet")}):
        mine, other = a / name, b / name
        if not mine.is_file() or not other.is_file():
            out.append(Comparison(name, "different", float("nan"), f"missing in {b if mine.is_file() else a}"))
            continue
        tables = []
        for path in (mine, other):
            try:
                tables.append(pq.read_table(path))
            except (OSError, pa.ArrowException) as err:
                raise ValueError(f"{path}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
        out.append(compare_tables(name, tables[0], tables[1], tolerance))
    return out


def exit_status(results: list[Comparison]) -> int:
    """0 when all agree within tolerance, 1 when an exact column or the rows differ, 3 when only floats moved."""
    worst = max((VERDICTS.index(r.verdict) for r in results), default=0)
    return {0: 0, 1: 0, 2: 3, 3: 1}[worst]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="one run's manifests folder")
    parser.add_argument("b", type=Path, help="the other run's manifests folder")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest float difference accepted (default {TOLERANCE})")
    args = parser.parse_args(argv)
    try:
        if not args.tolerance >= 0:
            raise ValueError(f"--tolerance {args.tolerance}: must be a number >= 0")
        results = compare_dirs(args.a, args.b, args.tolerance)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        print(r.line(args.tolerance))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
