"""The demo is byte-identical whatever the CPU's SIMD features; its stored references match the live models."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.colour import rgb_to_yuv420, rgb_to_yuv420_numpy, yuv420_to_rgb, yuv420_to_rgb_numpy
from pipeline.demo.measure_reference import TOLERANCE_PX, check
from pipeline.params import PROJECT_PARAMS

ROOT = Path(__file__).resolve().parents[3]
#: Imitates an older CPU: OpenCV and numpy dispatch to their baseline (SSE2) kernels only.
OLD_CPU = {"OPENCV_CPU_DISABLE": "AVX512_SKX,AVX512_ICL,AVX512_CLX,AVX2,FMA3,AVX,FP16,SSE4_2,POPCNT,SSSE3",
           "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX2 FMA3 F16C AVX"}


def build(out: Path, params: Path, env_extra: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    subprocess.run([sys.executable, "-m", "stages.demo", "--params", str(params), "--out", str(out)], cwd=ROOT,
                   env=env, check=True, capture_output=True)


def test_demo_is_identical_on_an_imitated_older_cpu(tmp_path):
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["demo"].update(n_clips=2, n_rolled=1, n_exits=1, clip_frames=12, lead_frames=3, tail_frames=3)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = ROOT / "data" / f"_test_demo_{os.getpid()}"
    try:
        build(out / "a", params, {})
        build(out / "b", params, OLD_CPU)
        files = sorted(p.relative_to(out / "a") for p in (out / "a").rglob("*") if p.is_file())
        assert len([f for f in files if f.suffix == ".mp4"]) == 4
        for rel in files:
            if rel.name != "sources.csv":  # holds the output folder's own path
                assert (out / "a" / rel).read_bytes() == (out / "b" / rel).read_bytes(), rel
        truth = pd.read_parquet(out / "a" / "truth.parquet")
        assert set(truth.scenario) == {"camera", "rolled", "exit"}
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
