"""The run cache inside a real stage (faces, on a real clip, a real LocalCluster): a run with model files missing
stores nothing that a whole environment would be served, a damaged entry is computed again, prune keeps what the
current outputs were built from, and a full disk while storing ends the stage in one line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from small_fs import fill, small_file_system

from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS
from pipeline.video import VideoWriter

ROOT = Path(__file__).resolve().parents[2]
N_FRAMES = 6


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A clip of a face drifting across the frame, its clips manifest, and params for a one-worker faces stage."""
    from skimage import data

    work = tmp_path_factory.mktemp("faces_cache")
    face = cv2.resize(data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    clip = work / "clip.mp4"
    with VideoWriter(clip, fps=25, crf=12) as out:
        for k in range(N_FRAMES):
            out.write(cv2.warpAffine(face, np.float32([[1, 0, 2 * k], [0, 1, k]]), (192, 192),
                                     borderMode=cv2.BORDER_REFLECT))
    write_rows([{"video_id": "astronaut", "status": "ok", "path": str(clip), "start_frame": 0,
                 "end_frame": N_FRAMES - 1, "n_frames": N_FRAMES, "fps": 25.0, "width": 192, "height": 192}],
               "clips", work / "clips.parquet")
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(n_workers=1, threads_per_worker=1)
    raw["faces"].update(min_track_frames=N_FRAMES // 2, search_angles=[])
    raw["models"]["mirror"] = str((ROOT / raw["models"]["mirror"]).resolve()) if raw["models"]["mirror"] else None
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (work / "no-models").mkdir()
    return work


def faces(work: Path, cache: Path, tag: str, models: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WFLWV_CACHE": str(cache)}
    if not models:  # a user whose model folders are briefly empty
        env.update(WFLWV_MODEL_CACHE=str(work / "no-models"), WFLWV_MODEL_MIRROR=str(work / "no-models"))
    return subprocess.run([sys.executable, "-m", "stages.faces", "--params", "params.yaml", "--clips", "clips.parquet",
                           "--out", f"faces_{tag}.parquet", "--status-out", f"status_{tag}.parquet"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600, check=False)


def same(work: Path, a: str, b: str) -> bool:
    return all(pq.read_table(work / f"{kind}_{a}.parquet").equals(pq.read_table(work / f"{kind}_{b}.parquet"),
                                                                   check_metadata=True) for kind in ("faces", "status"))


def test_what_a_broken_environment_computed_is_never_served_to_a_whole_one(project):
    work = project
    cache = work / "cache"
    broken = faces(work, cache, "missing", models=False)
    assert broken.returncode == 0, broken.stderr[-3000:]
    detectors = set(pq.read_table(work / "faces_missing.parquet").column("detector").to_pylist())
    assert "retinaface" not in detectors  # RetinaFace's file was missing: the chain fell back

    back = faces(work, cache, "back")  # the files are back; the same cache
    assert back.returncode == 0, back.stderr[-3000:]
    whole = faces(work, work / "cache_whole", "whole")  # a whole environment from scratch
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert same(work, "back", "whole") and not same(work, "missing", "whole")
    assert set(pq.read_table(work / "faces_whole.parquet").column("detector").to_pylist()) == {"retinaface"}

    entries = [p for p in (cache / "faces").glob("??/*") if p.is_dir()]
    assert len(entries) == 2  # one per environment: the broken one's, the whole one's
    whole_entry = next(p for p in entries if b"retinaface" in (p / "frames.parquet").read_bytes())
    (whole_entry / "frames.parquet").unlink()  # a stored piece goes missing
    again = faces(work, cache, "again")
    assert again.returncode == 0 and "discarded: frames.parquet is missing" in again.stderr, again.stderr[-3000:]
    assert same(work, "again", "whole") and "(0 reused, 1 computed)" in again.stderr

    from pipeline.runcache import main

    os.environ["WFLWV_CACHE"] = str(cache)
    try:
        with redirect_stdout(io.StringIO()) as printed:
            assert main(["--params", str(work / "params.yaml"), "prune", "--older-than", "0", "--project",
                         str(work)]) == 0
    finally:
        del os.environ["WFLWV_CACHE"]
    assert "removed" in printed.getvalue()
    reused = faces(work, cache, "reused")
    assert reused.returncode == 0 and "(1 reused, 0 computed)" in reused.stderr, reused.stderr[-3000:]
    assert same(work, "reused", "whole")


def test_a_full_disk_while_storing_ends_the_stage_in_one_line_and_writes_nothing(project):
    work = project
    cache = work / "cache_full"
    with small_file_system(cache / "faces", "64k") as folder:
        fill(folder)
        done = faces(work, cache, "full")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {cache / 'faces'}") and "No space left on device" in last, last
    assert "Traceback" not in done.stderr
    assert not (work / "faces_full.parquet").exists() and not (work / "status_full.parquet").exists()
