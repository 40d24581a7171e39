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


def test_manifest_writer_streams_one_video_per_row_group(tmp_path):
    from pipeline.manifest import ManifestWriter, iter_videos, read_video

    path = tmp_path / "landmarks.parquet"
    with ManifestWriter(path, "landmarks", metadata={"produced_by": "test"}) as writer:
        for vid, frames in (("a", [1, 0]), ("b", []), ("c", [0, 1, 2])):
            writer.write([landmark_row(vid, f) for f in frames])
    table = read_table(path, "landmarks")
    assert table.schema.metadata[b"produced_by"] == b"test" and table.num_rows == 5
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == 2  # one per video with rows
    videos = [(vid, t.column("frame").to_pylist()) for vid, t in iter_videos(path, "landmarks", columns=["frame"])]
    assert videos == [("a", [0, 1]), ("c", [0, 1, 2])]
    assert read_video(path, "landmarks", "c").column("frame").to_pylist() == [0, 1, 2]
    assert read_video(path, "landmarks", "b").num_rows == 0
    assert duckdb.sql(f"select count(distinct video_id) from '{path}'").fetchall()[0][0] == 2


def test_an_empty_stream_is_a_manifest_with_its_schema_and_a_failed_one_leaves_nothing(tmp_path):
    from pipeline.manifest import ManifestWriter

    with ManifestWriter(tmp_path / "faces.parquet", "faces"):
        pass
    assert read_table(tmp_path / "faces.parquet", "faces").num_rows == 0
    with pytest.raises(RuntimeError), ManifestWriter(tmp_path / "x.parquet", "landmarks") as writer:
        writer.write([landmark_row("a", 0)])
        raise RuntimeError("killed mid-stage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.parquet"]


def test_a_file_not_in_video_order_is_refused_by_the_streaming_reader(tmp_path):
    from pipeline.manifest import ManifestError, iter_videos

    path = tmp_path / "landmarks.parquet"
    write_rows([landmark_row("a", 0), landmark_row("b", 0), landmark_row("a", 1)], "landmarks", path)
    with pytest.raises(ManifestError, match="not contiguous"):
        list(iter_videos(path, "landmarks"))
