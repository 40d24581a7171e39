import numpy as np

from conftest import frame_index, ramp_video
from pipeline.acquire.trim import trim_clip
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.video import iter_frames, probe, read_frames


def test_writer_and_probe(tmp_path):
    path = ramp_video(tmp_path / "v.mp4", 30, fps=25)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.codec) == (64, 48, 25.0, "h264")
    frames = read_frames(path)
    assert frames.shape == (30, 48, 64, 3)
    assert [frame_index(f) for f in frames] == list(range(30))


def test_trim_is_frame_exact(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 60)
    row = trim_clip("clip", src, 17, 41, tmp_path / "clips", stage_params("trim", PROJECT_PARAMS, crf=0))
    assert row["status"] == "ok", row["error"]
    assert row["n_frames"] == 25
    assert len(row["source_pts"]) == 25 and row["source_pts"] == sorted(row["source_pts"])
    got = [frame_index(f.rgb) for f in iter_frames(row["path"])]
    assert got == list(range(17, 42))


def test_trim_window_past_end_is_a_status_row(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 20)
    row = trim_clip("clip", src, 10, 30, tmp_path / "clips", stage_params("trim", PROJECT_PARAMS))
    assert row["status"] == "bad_window"
    assert "source has 20 decoded frames" in row["error"] and str(src) in row["error"]
    assert not (tmp_path / "clips" / "clip.mp4").exists()


def test_trim_undecodable_file_is_a_status_row(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    row = trim_clip("clip", bad, 0, 3, tmp_path / "clips", stage_params("trim", PROJECT_PARAMS))
    assert row["status"] == "decode_error"
    assert str(bad) in row["error"]


def test_read_selected_frames(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 12)
    frames = read_frames(src, [2, 5, 11])
    assert [frame_index(f) for f in frames] == [2, 5, 11]
    assert np.ptp(frames[0][..., 0]) <= 2  # flat frames survive the codec
