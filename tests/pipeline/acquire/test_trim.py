"""pipeline.acquire.trim and stages.trim on real PyAV files: frame-exact windows, seek or sequential, odd sizes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, frame_index, ramp_video
from pipeline.acquire.files import OutputError
from pipeline.acquire.trim import pad_even, trim_clip
from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.video import NoVideoStream, iter_frames, probe


def trim_params(**overrides):
    return stage_params("trim", PROJECT_PARAMS, **overrides)


def test_trim_is_frame_exact_and_seeks(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 60)
    row = trim_clip("clip", src, 17, 41, tmp_path / "clips", trim_params(crf=0))
    assert row["status"] == "ok", row["error"]
    assert row["decode_mode"] == "seek" and row["decode_note"] is None
    assert row["n_frames"] == 25
    assert len(row["source_pts"]) == 25 and row["source_pts"] == sorted(row["source_pts"])
    assert [frame_index(f.rgb) for f in iter_frames(row["path"])] == list(range(17, 42))


def test_seek_and_sequential_cut_the_same_frames(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 120)
    rows = [trim_clip(f"c{seek}", src, 70, 99, tmp_path / "clips", trim_params(crf=0, seek=seek))
            for seek in (True, False)]
    assert [r["decode_mode"] for r in rows] == ["seek", "sequential"]
    assert rows[1]["decode_note"] == "trim.seek is off"
    assert rows[0]["source_pts"] == rows[1]["source_pts"]
    a, b = ([f.rgb for f in iter_frames(r["path"])] for r in rows)
    assert len(a) == 30 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unindexable_stream_falls_back_and_says_so(tmp_path):
    import av

    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as out:  # an elementary stream: packets carry no PTS
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "2", "g": "10"}
        for k in range(40):
            rgb = np.full((48, 64, 3), (16 * (k % 16), 16 * (k // 16), 128), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    row = trim_clip("raw", path, 12, 20, tmp_path / "clips", trim_params(crf=0))
    assert row["status"] == "ok", row["error"]
    assert row["decode_mode"] == "sequential" and "not indexable" in row["decode_note"]
    assert [frame_index(f.rgb) for f in iter_frames(row["path"])] == list(range(12, 21))


def test_window_past_end_is_found_from_the_index(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 20)
    row = trim_clip("clip", src, 10, 30, tmp_path / "clips", trim_params())
    assert row["status"] == "bad_window"
    assert "source has 20 frames" in row["error"] and str(src) in row["error"]
    assert not (tmp_path / "clips" / "clip.mp4").exists()
    sequential = trim_clip("clip", src, 10, 30, tmp_path / "clips", trim_params(seek=False))
    assert sequential["status"] == "bad_window" and "source has 20 decoded frames" in sequential["error"]
    assert not (tmp_path / "clips" / "clip.mp4").exists()


def test_undecodable_file_is_a_status_row(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    row = trim_clip("clip", bad, 0, 3, tmp_path / "clips", trim_params())
    assert row["status"] == "decode_error"
    assert str(bad) in row["error"]


@pytest.mark.parametrize("blocker", ["clips", "clips/sub"])
def test_an_unwritable_clips_folder_is_an_output_fault_not_the_videos(tmp_path, blocker):
    """A file where the clips folder should be: the run stops naming the path; the source is not blamed."""
    src = ramp_video(tmp_path / "src.mp4", 20)
    (tmp_path / "clips").write_bytes(b"a file in the way")
    out_dir = tmp_path / blocker
    with pytest.raises(OutputError, match=rf"^{tmp_path / blocker}: cannot write clip clip\.mp4: "):
        trim_clip("clip", src, 2, 9, out_dir, trim_params())
    assert (tmp_path / "clips").read_bytes() == b"a file in the way"


def test_a_source_that_breaks_mid_window_is_still_a_decode_error(tmp_path):
    """Decoding fails inside the writer's loop (after frames were written): still the source's fault."""
    data = bytearray(ramp_video(tmp_path / "src.mp4", 60).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    row = trim_clip("clip", broken, 0, 59, tmp_path / "clips", trim_params(seek=False))
    assert row["status"] == "decode_error" and "avcodec_send_packet" in row["error"], row["error"]
    assert list((tmp_path / "clips").iterdir()) == []  # the partial clip was discarded


def test_an_unsafe_id_is_a_status_row_and_never_a_path(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 20)
    row = trim_clip("../escape", src, 2, 9, tmp_path / "clips", trim_params())
    assert row["status"] == "error" and "'../escape' is not a safe file name" in row["error"]
    assert not (tmp_path / "escape.mp4").exists() and not (tmp_path / "clips").exists()


def test_audio_only_source_is_no_video_stream(tmp_path, media):
    path = tmp_path / "audio.mp4"
    path.write_bytes(media["audio.mp4"][0])
    with pytest.raises(NoVideoStream, match="no video stream"):
        probe(path)
    row = trim_clip("a", path, 0, 3, tmp_path / "clips", trim_params())
    assert row["status"] == "no_video_stream" and "streams: audio" in row["error"]
    assert list((tmp_path / "clips").glob("*")) == []


def test_odd_sized_source_is_padded_explicitly(tmp_path, media):
    path = tmp_path / "odd.mp4"
    path.write_bytes(media["odd.mp4"][0])
    row = trim_clip("odd", path, 2, 9, tmp_path / "clips", trim_params(crf=0))
    assert row["status"] == "ok", row["error"]
    assert (row["source_width"], row["source_height"], row["width"], row["height"]) == (321, 241, 322, 242)
    source = next(iter_frames(path, 2, 3)).rgb
    clip = next(iter_frames(row["path"])).rgb
    assert clip.shape == (242, 322, 3)
    # the added column/row repeat the source's last column/row (lossless up to the YUV round trip)
    assert np.abs(clip[:241, :321].astype(int) - source).mean() < 3
    assert np.abs(clip[:241, 321].astype(int) - clip[:241, 320]).max() <= 8
    assert np.array_equal(pad_even(source)[:241, 321], source[:, 320])


def _hidden(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*") if p.is_file())


def test_kill_9_mid_stage_then_rerun_gives_the_same_manifest(tmp_path):
    """A real SIGKILL of the whole stage while a clip is being written; the rerun matches an uninterrupted run."""
    project = tmp_path / "project"
    (project / "manifests").mkdir(parents=True)
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(n_workers=1, threads_per_worker=1)
    raw["trim"].update(preset="slow", crf=0)  # slow enough to be caught mid-write
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    sources, downloads = [], []
    for k, n in enumerate((30, 100, 30)):
        path = ramp_video(project / "src" / f"v{k}.mp4", n, size=(256, 192))
        sources.append({"video_id": f"v{k}", "url": f"file:src/v{k}.mp4", "start_frame": 2, "end_frame": n - 3,
                        "official_subset": None, "source_file": "list.csv", "source_line": k + 2})
        downloads.append({"video_id": f"v{k}", "url": f"file:src/v{k}.mp4", "status": "ok",
                          "path": str(path.relative_to(project))})
    write_rows(sources, "sources", project / "manifests" / "sources.parquet")
    write_rows(downloads, "downloads", project / "manifests" / "downloads.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "stages.trim", "--params", "params.yaml"]
    clips, manifest = project / "data" / "clips", project / "manifests" / "clips.parquet"

    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    clean = pd.read_parquet(manifest)
    clean_bytes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in clips.glob("*.mp4")}
    cache = project / ".cache" / "runs" / "trim"  # clips are cut inside the run cache, then linked into data/clips
    shutil.rmtree(clips)
    shutil.rmtree(cache)
    manifest.unlink()

    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".v1.mp4.") for p in cache.glob(".tmp/*/media/*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the stage ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its dask workers, like a crash
    proc.wait()
    assert list(cache.glob(".tmp/*")), "the kill should leave the half-written entry behind"
    assert not manifest.exists() and not (clips / "v1.mp4").exists()

    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _hidden(clips) == [] and not list(cache.glob(".tmp/*"))
    pd.testing.assert_frame_equal(pd.read_parquet(manifest), clean)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in clips.glob("*.mp4")} == clean_bytes


def test_manifests_from_different_lists_end_in_one_line(tmp_path, capsys):
    from pipeline.cli import run_stage
    from stages.trim import main

    write_rows([{"video_id": "a", "url": "https://x/a", "start_frame": 0, "end_frame": 5, "source_file": "l.csv",
                 "source_line": 2}], "sources", tmp_path / "sources.parquet")
    write_rows([{"video_id": "b", "url": "https://x/b", "status": "unavailable", "error": "gone"}], "downloads",
               tmp_path / "downloads.parquet")
    argv = ["--sources", str(tmp_path / "sources.parquet"), "--downloads", str(tmp_path / "downloads.parquet"),
            "--media", str(tmp_path / "clips"), "--out", str(tmp_path / "clips.parquet"),
            "--params", str(PROJECT_PARAMS)]
    assert run_stage(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 video(s) not in" in err and "'b'" in err
