"""The demo is byte-identical whatever the CPU's SIMD features; its stored references match the live models."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from numpy._core._multiarray_umath import __cpu_features__

from pipeline.colour import rgb_to_yuv420, rgb_to_yuv420_numpy, yuv420_to_rgb, yuv420_to_rgb_numpy
from pipeline.demo.expected import first_difference
from pipeline.demo.measure_reference import TOLERANCE_PX, check
from pipeline.demo.media import load_carphone
from pipeline.params import PROJECT_PARAMS
from pipeline.video import VideoWriter

ROOT = Path(__file__).resolve().parents[3]
#: Per-file md5 of the small demo below, built natively; a machine that builds other bytes is named by its first file.
SMALL_DEMO_MD5 = Path(__file__).with_name("demo_md5.txt")
#: The small demo: the first ten clips (every difficulty level, and the carphone video at clip 9), one rolled, one exit.
SMALL_DEMO = {"n_clips": 10, "n_rolled": 1, "n_exits": 1, "real_motion_clips": 0,  # no real-motion file copy
              "clip_frames": 4, "lead_frames": 1, "tail_frames": 1}

#: Imitated CPUs, in every library the demo build calls, each with that library's own feature names (unknown names
#: are ignored, at most with a warning: ``test_the_imitated_cpus_take_effect`` checks that each one still bites).
#: OpenCV's dispatch and Intel IPP inside it (``cv2.resize`` ran through IPP), numpy's dispatch targets, glibc's
#: libm variants (ifuncs chosen by CPU feature: FMA or not), OpenBLAS's kernel.
_GLIBC_OFF_AVX512 = "-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ"
IMITATED_CPUS = {
    "sse": {  # an x86-64 baseline machine: SSE only, no FMA
        "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-ICL,AVX512-COMMON,AVX512F,AVX2,FMA3,FP16,AVX,POPCNT,SSE4.2,"
                              "SSE4.1,SSSE3",
        "OPENCV_IPP": "sse42",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
        "NPY_ENABLE_CPU_FEATURES": "",  # numpy refuses both lists: the imitation replaces the pinned whitelist
        "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={_GLIBC_OFF_AVX512},-AVX2,-FMA,-FMA4,-AVX,-SSE4_1,-SSE4_2,-SSSE3",
        "OPENBLAS_CORETYPE": "Prescott",
    },
    "avx2": {  # a machine without AVX-512 (the kind that built other carphone videos)
        "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-ICL,AVX512-COMMON,AVX512F",
        "OPENCV_IPP": "avx2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "NPY_ENABLE_CPU_FEATURES": "",
        "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={_GLIBC_OFF_AVX512}",
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "no_ipp": {"OPENCV_IPP": "disabled"},  # OpenCV's own kernels wherever IPP would run
}

#: Prints what the libraries dispatch to in this process (run under an imitated CPU's environment).
_PROBE = """
import json, cv2
from numpy._core._multiarray_umath import __cpu_features__ as np_features
sse41, avx2, avx512 = 6, 11, 256  # cv2's CPU_SSE4_1, CPU_AVX2, CPU_AVX512_SKX
print(json.dumps({"cv_sse41": cv2.checkHardwareSupport(sse41), "cv_avx2": cv2.checkHardwareSupport(avx2),
                  "cv_avx512": cv2.checkHardwareSupport(avx512), "ipp": cv2.ipp.useIPP(),
                  "ipp_version": cv2.ipp.getIppVersion(), "np_v3": np_features["X86_V3"],
                  "np_v4": np_features["X86_V4"]}))
"""

#: Prints one md5 per demo source video: its RGB frames, our YUV conversion of them and back, its true boxes and
#: model-reference points.
_FRAME_HASHES = """
import hashlib, sys
from pipeline.colour import rgb_to_yuv420, yuv420_to_rgb
from pipeline.demo.build import source_videos
from pipeline.params import stage_params
for video in source_videos(stage_params("demo", sys.argv[1])):
    md5 = hashlib.md5()
    for frame in video.frames:
        planes = rgb_to_yuv420(frame)
        for array in (frame, *planes, yuv420_to_rgb(*planes)):
            md5.update(array.tobytes())
    for array in (video.boxes, video.points):
        md5.update(b"" if array is None else array.tobytes())
    print(video.video_id, md5.hexdigest())
"""


def start_python(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate()
    assert process.returncode == 0, err
    return out


def run_python(args: list[str], env_extra: dict[str, str]) -> str:
    return finish(start_python(args, env_extra))


@pytest.fixture(scope="module")
def small_params(tmp_path_factory) -> Path:
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["demo"].update(SMALL_DEMO)
    params = tmp_path_factory.mktemp("demo") / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def test_the_imitated_cpus_take_effect():
    native = json.loads(run_python(["-c", _PROBE], {}))
    sse = json.loads(run_python(["-c", _PROBE], IMITATED_CPUS["sse"]))
    avx2 = json.loads(run_python(["-c", _PROBE], IMITATED_CPUS["avx2"]))
    assert not (sse["cv_sse41"] or sse["cv_avx2"] or sse["cv_avx512"] or avx2["cv_avx512"])
    assert not (sse["np_v3"] or sse["np_v4"] or avx2["np_v4"])
    if native["ipp"]:
        assert "SSE4.2" in sse["ipp_version"] and "AVX2" in avx2["ipp_version"], (sse, avx2)
        assert not json.loads(run_python(["-c", _PROBE], IMITATED_CPUS["no_ipp"]))["ipp"]
    loader = Path("/lib64/ld-linux-x86-64.so.2")  # glibc's own report of the CPU features it acts on
    if native["cv_avx2"] and loader.exists():
        diagnostics = [subprocess.run([str(loader), "--list-diagnostics"], env={**os.environ, **extra},
                                      capture_output=True, text=True).stdout for extra in ({}, IMITATED_CPUS["sse"])]
        assert diagnostics[0] and diagnostics[0] != diagnostics[1]


def test_demo_frames_boxes_and_reference_are_identical_on_imitated_cpus(small_params):
    runs = {name: start_python(["-c", _FRAME_HASHES, str(small_params)], env)
            for name, env in {"native": {}, **IMITATED_CPUS}.items()}  # side by side: each takes a few seconds
    hashes = {name: finish(process) for name, process in runs.items()}
    native = hashes.pop("native")
    assert len(native.splitlines()) == 12
    for name, imitated in hashes.items():
        differing = [a.split()[0] for a, b in zip(native.splitlines(), imitated.splitlines(), strict=True) if a != b]
        assert not differing, f"imitated CPU {name!r}: other frames, boxes or reference points in {differing}"


def test_x264_writes_the_same_bytes_at_every_simd_level(tmp_path):
    """From SSSE3 (every x86-64 CPU since 2006) to AVX-512 x264 writes the same bitstream, its macroblock tree being off
    (``X264_SAME_ON_EVERY_CPU``: with it, these frames came out otherwise at AVX-512 and AVX2). Below SSSE3 x264 picks
    intra modes otherwise, which shows that the level option bites."""
    frames = [cv2.resize(f, (640, 524), interpolation=cv2.INTER_CUBIC)[22:502] for f in load_carphone()[:30]]
    levels = ["SSE2", None, "SSSE3", "AVX"] + ["AVX2"] * __cpu_features__["AVX2"]
    levels += ["AVX512"] * __cpu_features__["AVX512_SKX"]
    written = {}
    for level in levels:
        with VideoWriter(tmp_path / f"{level}.mp4", fps=30, crf=16, x264_cpu=level) as out:
            for frame in frames:
                out.write(frame)
        written[level] = hashlib.md5((tmp_path / f"{level}.mp4").read_bytes()).hexdigest()
    assert written.pop("SSE2") != written[None]
    assert len(set(written.values())) == 1, written


def test_demo_build_matches_the_committed_hashes(small_params):
    out = ROOT / "data" / f"_test_demo_{os.getpid()}"
    try:
        run_python(["-m", "stages.demo", "--params", str(small_params), "--out", str(out)], {})
        assert len(list((out / "raw").glob("*.mp4"))) == 12
        truth = pd.read_parquet(out / "truth.parquet")
        assert set(truth.scenario) == {"camera", "rolled", "exit"} and "carphone" in set(truth.media)
        # sources.csv holds the output folder's own path
        problem = first_difference(out, SMALL_DEMO_MD5, ignore={"sources.csv"})
        assert problem is None, f"this machine builds another demo: {problem}"
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_stored_references_match_the_live_models():
    assert check() <= TOLERANCE_PX


def test_integer_colour_conversion_round_trips():
    rng = np.random.default_rng(0)
    flat = np.full((4, 4, 3), 128, np.uint8)
    smooth = np.repeat(np.repeat(rng.integers(20, 235, (8, 8, 3), dtype=np.uint8), 2, 0), 2, 1)
    for to_yuv, to_rgb in ((rgb_to_yuv420, yuv420_to_rgb), (rgb_to_yuv420_numpy, yuv420_to_rgb_numpy)):
        assert np.abs(to_rgb(*to_yuv(flat)).astype(int) - flat).max() <= 1
        back = to_rgb(*to_yuv(smooth))
        assert np.abs(back.astype(int) - smooth).max() <= 3  # 8-bit fixed point, chroma constant per 2×2 block
    # the two decoders agree to within a rounding level on the same planes
    y, u, v = rgb_to_yuv420(smooth)
    assert np.abs(yuv420_to_rgb(y, u, v).astype(int) - yuv420_to_rgb_numpy(y, u, v)).max() <= 2
