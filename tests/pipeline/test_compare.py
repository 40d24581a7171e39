"""Run comparison: exact columns must match, float columns within the stated tolerance."""

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.compare import TOLERANCE, compare_dirs, compare_tables


def table(points, status="ok"):
    return pa.table({"video_id": ["a", "b"], "status": [status, "ok"],
                     "points": pa.array(points, pa.list_(pa.list_(pa.float32(), 2)))})


def test_tolerance_and_exact_columns(tmp_path):
    base = table([[[1.0, 2.0]], [[3.0, 4.0]]])
    assert compare_tables("t", base, base).verdict == "identical"
    nudged = table([[[1.0 + TOLERANCE / 2, 2.0]], [[3.0, 4.0]]])
    assert compare_tables("t", base, nudged).verdict == "within_tolerance"
    moved = table([[[1.5, 2.0]], [[3.0, 4.0]]])
    result = compare_tables("t", base, moved)
    assert result.verdict == "different" and "points" in result.reason
    assert compare_tables("t", base, table([[[1.0, 2.0]], [[3.0, 4.0]]], status="error")).reason.startswith(
        "column status")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pq.write_table(base, tmp_path / "a" / "x.parquet")
    pq.write_table(nudged, tmp_path / "b" / "x.parquet")
    pq.write_table(base, tmp_path / "a" / "y.parquet")
    verdicts = {r.name: r.verdict for r in compare_dirs(tmp_path / "a", tmp_path / "b")}
    assert verdicts == {"x.parquet": "within_tolerance", "y.parquet": "different"}
