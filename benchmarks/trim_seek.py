"""Trim cost at the start vs the end of a long video: seeking through the PTS index keeps it O(window).

Generates (once, outside git) a 10-minute 1280×720 30 fps H.264 video shaped like YouTube's: B-frames, open GOPs,
keyframes every 2–5 s at random. Then trims the same 150-frame window length from the start (frames 0..149) and
from the end (starting one frame before a late keyframe, the worst case: a whole GOP of pre-roll), with the trim
stage's own code and params, and checks that both cuts hold exactly the frames sequential decoding gives (per-frame
SHA-1 of the RGB pixels, and the source PTS the trim recorded).

    .venv/bin/python benchmarks/trim_seek.py --workdir /tmp/trim_seek --out benchmarks/results/trim_seek.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.acquire.trim import trim_clip  # noqa: E402
from pipeline.manifest import write_json  # noqa: E402
from pipeline.params import PROJECT_PARAMS, TrimParams, stage_params  # noqa: E402
from pipeline.video import index_frames, iter_frames  # noqa: E402

WIDTH, HEIGHT, FPS, SECONDS, WINDOW = 1280, 720, 30, 600, 150


def make_video(path: Path, seconds: int = SECONDS, seed: int = 0) -> dict[str, object]:
    """Encode the test video: a panning textured scene with a moving block, forced keyframes every 2–5 s."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 16 + 1, 2 * WIDTH // 16 + 1, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:HEIGHT, : 2 * WIDTH]
    fine = rng.integers(0, 24, (HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)  # some detail, so B/P frames carry bits
    texture = texture // 2 + fine + 64
    n = seconds * FPS
    forced, next_key = [], 0
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # Keyframes only where forced; 3 B-frames; open GOP (leading B-frames reference the previous GOP).
        stream.options = {"preset": "veryfast", "crf": "23",
                          "x264-params": "keyint=infinite:scenecut=0:bframes=3:b-adapt=0:open-gop=1"}
        for k in range(n):
            x = (k * 3) % WIDTH
            img = np.ascontiguousarray(texture[:, x:x + WIDTH])
            y0, x0 = (k * 2) % (HEIGHT - 120), (k * 5) % (WIDTH - 160)
            img[y0:y0 + 120, x0:x0 + 160] = (k * 7 % 256, 255 - k % 256, 90)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, FPS)
            if k == next_key:
                frame.pict_type = av.video.frame.PictureType.I
                forced.append(k)
                next_key += int(rng.integers(2 * FPS, 5 * FPS + 1))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return {"frames": n, "forced_keyframes": len(forced)}


def describe(path: Path) -> dict[str, object]:
    """Packet-level facts: keyframe spacing, B-frames, leading pictures (open GOP), bitrate."""
    leading, last_key, size = 0, None, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            size += packet.size
            if packet.is_keyframe:
                last_key = packet.pts
            elif last_key is not None and packet.pts < last_key:
                leading += 1
        has_b = stream.codec_context.has_b_frames
    index = index_frames(path)
    gaps = np.diff(index.keyframes) / FPS
    return {"width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": len(index), "bytes": path.stat().st_size,
            "video_mbit_s": round(size * 8 / (len(index) / FPS) / 1e6, 3), "keyframes": len(index.keyframes),
            "keyframe_gap_s": [round(float(gaps.min()), 2), round(float(gaps.max()), 2)],
            "leading_pictures": leading, "b_frames": bool(has_b)}


def sequential_checksums(path: Path) -> tuple[list[str], list[int], float]:
    """SHA-1 of every frame's RGB pixels and its PTS, by decoding from frame 0 (the ground truth)."""
    started = time.perf_counter()
    sums, pts = [], []
    for frame in iter_frames(path):
        sums.append(hashlib.sha1(frame.rgb.tobytes()).hexdigest())
        pts.append(frame.pts)
    return sums, pts, time.perf_counter() - started


def timed_trim(path: Path, start: int, out_dir: Path, params: TrimParams, seek: bool, reps: int
               ) -> tuple[list[float], dict]:
    params = params.model_copy(update={"seek": seek})
    times, row = [], {}
    for _ in range(reps):
        began = time.perf_counter()
        row = trim_clip("bench", path, start, start + WINDOW - 1, out_dir, params)
        times.append(time.perf_counter() - began)
        assert row["status"] == "ok", row["error"]
    return times, row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keeps the generated video between runs (default: a temp dir)")
    parser.add_argument("--seconds", type=int, default=SECONDS, help="length of the generated video")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/trim_seek.json"))
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trim_seek_"))
    workdir.mkdir(parents=True, exist_ok=True)
    params = stage_params("trim", PROJECT_PARAMS)  # read once: the trim stage's codec, CRF and preset
    video = workdir / f"long_720p_{args.seconds}s.mp4"
    if not video.is_file():
        began = time.perf_counter()
        made = make_video(video, args.seconds)
        print(f"generated {video} ({made}) in {time.perf_counter() - began:.0f} s", flush=True)
    facts = describe(video)
    index_started = time.perf_counter()
    index = index_frames(video)
    index_s = time.perf_counter() - index_started
    # The slow ground truth, kept with the video; keyed by the decoding code (its RGB conversion defines the pixels).
    code = hashlib.sha1(b"".join((ROOT / f).read_bytes() for f in ("pipeline/video.py", "pipeline/colour.py")))
    cache = workdir / f"{video.stem}.sequential.{code.hexdigest()[:12]}.json"
    if cache.is_file():
        sums, pts, sequential_s = json.loads(cache.read_text())
    else:
        sums, pts, sequential_s = sequential_checksums(video)
        cache.write_text(json.dumps([sums, pts, sequential_s]))
    assert len(sums) == len(index), "index and sequential decoding disagree on the frame count"
    late_key = max(k for k in index.keyframes if k - 1 + WINDOW <= len(index))
    windows = {"start": 0, "end": late_key - 1}
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.python_version()}, PyAV {av.__version__}",
        "trim_params": params.model_dump(), "video": facts, "window_frames": WINDOW,
        "index_seconds": round(index_s, 3),
        "ground_truth_pass_seconds": round(sequential_s, 2), "windows": {},
    }
    for name, start in windows.items():
        times, row = timed_trim(video, start, workdir / "clips", params, seek=True, reps=args.reps)
        seek_key = index.keyframe_before(start)
        window_sums = [hashlib.sha1(f.rgb.tobytes()).hexdigest()
                       for f in iter_frames(video, start, start + WINDOW, index=index)]
        result["windows"][name] = {
            "start_frame": start, "seek_keyframe": seek_key, "preroll_frames": start - seek_key,
            "decode_mode": row["decode_mode"], "seconds": [round(t, 3) for t in times],
            "median_seconds": round(statistics.median(times), 3),
            "frames_equal_sequential": window_sums == sums[start:start + WINDOW],
            "pts_equal_sequential": row["source_pts"] == pts[start:start + WINDOW],
        }
        print(name, result["windows"][name], flush=True)
    seq_times, seq_row = timed_trim(video, windows["end"], workdir / "clips", params, seek=False, reps=1)
    result["end_window_without_seek_seconds"] = round(seq_times[0], 2)
    result["end_window_without_seek_pts_equal"] = seq_row["source_pts"] == pts[windows["end"]:windows["end"] + WINDOW]
    w = result["windows"]
    result["ratio_end_over_start"] = round(w["end"]["median_seconds"] / w["start"]["median_seconds"], 3)
    print(f"end/start = {result['ratio_end_over_start']}; without seek the end window takes "
          f"{result['end_window_without_seek_seconds']} s", flush=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
