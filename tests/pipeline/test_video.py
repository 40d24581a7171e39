"""pipeline.video: the PTS index and seeking, validated against sequential decoding on real encodes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import frame_index, ramp_video
from pipeline.video import (
    FrameIndex,
    IndexUnavailable,
    SeekMismatch,
    index_frames,
    iter_frames,
    probe,
    read_frames,
)


def encode(path: Path, n: int, codec: str = "libx264", fmt: str | None = None, options: dict[str, str] | None = None,
           vfr: bool = False, size: tuple[int, int] = (96, 64), fps: int = 25) -> Path:
    """Encode ``n`` distinct textured frames; ``vfr`` draws each frame's duration at random (1/50 to 1/10 s)."""
    rng = np.random.default_rng(0)
    w, h = size
    texture = rng.integers(0, 256, (h, 2 * w, 3), dtype=np.uint8)
    tick = Fraction(1, fps * 10)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = tick
        stream.options = options or {}
        t = 0
        for k in range(n):
            rgb = np.ascontiguousarray(np.roll(texture, 3 * k, axis=1)[:, :w])
            rgb[: h // 4, : w // 4] = 7 * k % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = t, tick
            t += int(rng.integers(5, 25)) if vfr else 10
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


#: YouTube serves H.264 with B-frames (closed or open GOPs) in MP4, and VP9 in WebM.
ENCODINGS = {
    "h264_bframes_closed_gop.mp4": dict(options={"g": "48", "bf": "3"}),
    "h264_bframes_open_gop.mp4": dict(options={
        "x264-params": "keyint=40:min-keyint=40:open-gop=1:bframes=3:b-adapt=0:scenecut=0"}),
    "h264_open_gop.mkv": dict(options={
        "x264-params": "keyint=40:min-keyint=40:open-gop=1:bframes=3:b-adapt=0:scenecut=0"}),
    "h264_variable_frame_rate.mp4": dict(options={"g": "30", "bf": "2"}, vfr=True),
    "vp9.webm": dict(codec="libvpx-vp9", options={"g": "30", "deadline": "realtime", "cpu-used": "8"}),
}


@pytest.fixture(scope="module", params=sorted(ENCODINGS))
def encoded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    n = 150 if "vp9" in request.param else 200
    return encode(tmp_path_factory.mktemp("enc") / request.param, n, **ENCODINGS[request.param])


def sequential(path: Path) -> tuple[list[np.ndarray], list[int | None]]:
    frames = list(iter_frames(path))
    return [f.rgb for f in frames], [f.pts for f in frames]


def test_index_matches_sequential_decoding(encoded):
    index = index_frames(encoded)
    _, pts = sequential(encoded)
    assert list(index.pts) == pts  # ordinal k of sequential decoding is the k-th smallest PTS
    assert index.keyframes[0] == 0 and len(index.keyframes) > 2


def test_seeked_windows_equal_sequential_frames(encoded):
    index = index_frames(encoded)
    rgb, pts = sequential(encoded)
    n = len(index)
    starts = {0, 1, n - 12, *(k + d for k in index.keyframes[1:] for d in (-2, -1, 0, 1))}
    for start in sorted(s for s in starts if 0 <= s <= n - 12):
        got = list(iter_frames(encoded, start, start + 12, index=index))
        assert [f.index for f in got] == list(range(start, start + 12)), start
        assert [f.pts for f in got] == pts[start:start + 12], start
        assert all(np.array_equal(f.rgb, rgb[f.index]) for f in got), start


def test_open_gop_fixture_really_has_leading_pictures(tmp_path):
    path = encode(tmp_path / "open.mp4", 120, **ENCODINGS["h264_bframes_open_gop.mp4"])
    leading, last_key = 0, None
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size and packet.is_keyframe:
                last_key = packet.pts
            elif packet.size and last_key is not None and packet.pts < last_key:
                leading += 1  # decoded after a keyframe, shown before it: references the previous GOP
    assert leading > 0


def test_raw_elementary_stream_cannot_be_indexed(tmp_path):
    path = encode(tmp_path / "raw.h264", 40, fmt="h264", options={"g": "20", "bf": "2"})
    with pytest.raises(IndexUnavailable, match="no PTS"):
        index_frames(path)
    assert len(list(iter_frames(path, 10, 20))) == 10  # sequential decoding still works


def test_a_wrong_index_is_caught_not_trusted(tmp_path):
    path = encode(tmp_path / "v.mp4", 120, options={"g": "40", "bf": "2"})
    good = index_frames(path)
    shifted = FrameIndex(tuple(p + 1 for p in good.pts), good.keyframes, good.time_base)
    with pytest.raises(SeekMismatch, match="no packet has"):
        list(iter_frames(path, 50, 60, index=shifted))
    dropped = FrameIndex(good.pts[:55] + good.pts[56:], good.keyframes, good.time_base)  # "frame 55" is missing
    with pytest.raises(SeekMismatch):
        list(iter_frames(path, 50, 60, index=dropped))


def test_writer_and_probe(tmp_path):
    path = ramp_video(tmp_path / "v.mp4", 30, fps=25)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.codec) == (64, 48, 25.0, "h264")
    frames = read_frames(path)
    assert frames.shape == (30, 48, 64, 3)
    assert [frame_index(f) for f in frames] == list(range(30))


def test_read_selected_frames(tmp_path):
    src = ramp_video(tmp_path / "src.mp4", 12)
    frames = read_frames(src, [2, 5, 11])
    assert [frame_index(f) for f in frames] == [2, 5, 11]
    assert np.ptp(frames[0][..., 0]) <= 2  # flat frames survive the codec


def test_region_conversion_equals_the_full_frame_crop(tmp_path, astronaut):
    import av

    from pipeline.video import VideoWriter, frame_rgb

    with VideoWriter(tmp_path / "a.mp4", fps=25) as out:
        out.write(np.ascontiguousarray(astronaut[:240, :320]))
    with av.open(str(tmp_path / "a.mp4")) as container:
        frame = next(container.decode(video=0))
        full = frame_rgb(frame)
        for x0, y0, x1, y1 in [(3, 5, 101, 77), (0, 0, 320, 240), (10, 11, 11, 12), (301, 200, 320, 240)]:
            assert np.array_equal(frame_rgb(frame, (x0, y0, x1, y1)), full[y0:y1, x0:x1])
