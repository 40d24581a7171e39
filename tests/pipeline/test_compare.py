"""Run comparison: exact columns must match, float columns within the stated tolerance."""

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.compare import TOLERANCE, compare_dirs, compare_tables, main


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
    pq.write_table(base, tmp_path / "b" / "z.parquet")
    assert compare_dirs(tmp_path / "a", tmp_path / "b")[-1].reason == f"missing in {tmp_path / 'a'}"


def test_a_missing_or_empty_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    pq.write_table(table([[[1.0, 2.0]], [[3.0, 4.0]]]), tmp_path / "a" / "x.parquet")
    (tmp_path / "empty").mkdir()
    for b, says in ((tmp_path / "nowhere", f"error: {tmp_path / 'nowhere'}: no such folder\n"),
                    (tmp_path / "empty", f"error: {tmp_path / 'empty'}: no manifest (*.parquet) in this folder\n")):
        assert main([str(tmp_path / "a"), str(b)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == says
    assert main([str(tmp_path / "a"), str(tmp_path / "a"), "--tolerance", "-1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main([str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out == "x.parquet: identical (max float difference 0)\n"
