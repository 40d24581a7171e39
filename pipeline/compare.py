"""Compare the manifests of two runs: exact where the pipeline is exact, within a stated tolerance where float
model kernels may differ between CPUs.

    python -m pipeline.compare manifests/ /other/clone/manifests/

Non-float columns (ids, frames, statuses, subsets, flags) must be equal. Float columns may differ by at most
:data:`TOLERANCE` (pixels for boxes and points, the column's own unit otherwise). Exit status 0 when every manifest
agrees, 1 otherwise; one line per manifest. A missing folder or one without manifests is one line and status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["TOLERANCE", "Comparison", "compare_tables", "compare_dirs"]

#: Largest float difference accepted between two machines' runs: 0.05 px for coordinates (a model kernel's last-bit
#: differences move points by ~1e-4 px; a tracker or consensus decision flipping moves them by pixels).
TOLERANCE = 0.05


@dataclass(frozen=True)
class Comparison:
    """Outcome for one manifest: identical bytes, equal within tolerance, or different (with the first reason)."""

    name: str
    verdict: str  # "identical" | "within_tolerance" | "different"
    max_float_diff: float
    reason: str = ""


def _flat_floats(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).astype(np.float64)


def _is_float(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def compare_tables(name: str, a: pa.Table, b: pa.Table, tolerance: float = TOLERANCE) -> Comparison:
    """Compare two tables column by column (rows in stored order)."""
    if a.column_names != b.column_names:
        return Comparison(name, "different", float("nan"), f"columns {a.column_names} != {b.column_names}")
    if a.num_rows != b.num_rows:
        return Comparison(name, "different", float("nan"), f"{a.num_rows} rows != {b.num_rows} rows")
    worst = 0.0
    for col in a.column_names:
        if _is_float(a.schema.field(col).type):
            x, y = _flat_floats(a.column(col)), _flat_floats(b.column(col))
            if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)):
                return Comparison(name, "different", float("nan"), f"column {col}: null/NaN pattern differs")
            finite = ~np.isnan(x)
            diff = float(np.abs(x[finite] - y[finite]).max()) if finite.any() else 0.0
            worst = max(worst, diff)
            if diff > tolerance:
                return Comparison(name, "different", diff, f"column {col}: max difference {diff:.4g} > {tolerance}")
        elif not a.column(col).equals(b.column(col)):
            return Comparison(name, "different", worst, f"column {col}: values differ")
    return Comparison(name, "identical" if worst == 0 else "within_tolerance", worst)


def compare_dirs(a: Path, b: Path, tolerance: float = TOLERANCE) -> list[Comparison]:
    """Compare every ``*.parquet`` manifest of folder ``a`` with its namesake in ``b`` (one only in ``b`` is a
    difference too). A folder that is missing or holds no manifest is a one-line ``ValueError``."""
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
        elif mine.read_bytes() == other.read_bytes():
            out.append(Comparison(name, "identical", 0.0))
        else:
            try:
                tables = pq.read_table(mine), pq.read_table(other)
            except (OSError, pa.ArrowException) as err:
                raise ValueError(f"{name}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
            out.append(compare_tables(name, *tables, tolerance))
    return out


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
        reason = f": {r.reason}" if r.reason else ""
        print(f"{r.name}: {r.verdict} (max float difference {r.max_float_diff:.3g}){reason}")
    return 0 if all(r.verdict != "different" for r in results) else 1

if __name__ == "__main__":
    sys.exit(main())
