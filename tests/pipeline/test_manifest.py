import duckdb
import numpy as np
import pytest

from pipeline.manifest import atomic_path, points_array, read_table, rows_by_video, write_rows
from pipeline.schemas import SCHEMA_VERSION, SCHEMAS, schema


def landmark_row(video_id, frame):
    pts = np.arange(98 * 2, dtype=np.float32).reshape(98, 2) + frame
    return {"video_id": video_id, "frame": frame, "model": "m", "family": "f", "scheme": "wflw98", "points": pts,
            "confidence": None, "wflw98": pts, "mask": np.ones(98, bool)}


def test_roundtrip_pandas_and_duckdb(tmp_path):
    path = tmp_path / "landmarks.parquet"
    write_rows([landmark_row("v1", 1), landmark_row("v1", 0), landmark_row("v2", 0)], "landmarks", path)
    table = read_table(path, "landmarks")
    assert table.schema.metadata[b"schema_version"].decode() == SCHEMA_VERSION
    assert table.schema.metadata[b"common_scheme"] == b"wflw98"
    df = table.to_pandas()
    assert list(df.columns) == SCHEMAS["landmarks"].names
    count = duckdb.sql(f"select video_id, count(*) as n from '{path}' group by video_id order by video_id").fetchall()
    assert count == [("v1", 2), ("v2", 1)]
    first_x = duckdb.sql(f"select wflw98[1][1] from '{path}' where video_id='v2'").fetchall()[0][0]
    assert first_x == 0.0
    by_video = rows_by_video(table)
    assert by_video["v1"].column("frame").to_pylist() == [0, 1]
    pts = points_array(by_video["v1"].column("wflw98"))
    assert pts.shape == (2, 98, 2) and pts[1, 0, 0] == 1.0


def test_unknown_column_and_wrong_manifest(tmp_path):
    with pytest.raises(ValueError, match="unknown columns"):
        write_rows([{"video_id": "a", "nope": 1}], "sources", tmp_path / "x.parquet")
    write_rows([{"stage": "s", "video_id": "a", "status": "ok"}], "video_status", tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="expected a 'faces' manifest"):
        read_table(tmp_path / "s.parquet", "faces")


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_every_manifest_has_version_and_conventions():
    for name in SCHEMAS:
        meta = schema(name).metadata
        assert meta[b"manifest"].decode() == name
        assert b"frame_index" in meta
    for name in ("downloads", "clips", "scores", "video_status"):
        assert "status" in schema(name).names


def test_error_messages_name_project_files_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "data" / "raw" / "gone.mp4"
    write_rows([{"video_id": "a", "url": "file:x", "status": "unavailable", "error": f"no such file: '{missing}'"}],
               "downloads", tmp_path / "d.parquet")
    assert read_table(tmp_path / "d.parquet", "downloads").column("error")[0].as_py() == (
        "no such file: 'data/raw/gone.mp4'")
