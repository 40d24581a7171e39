"""Scale-out on a real dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1, addressed by
`cluster.scheduler`, give the faces and label stages the same manifests as the default LocalCluster, also when a worker
is killed in the middle of a label task."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cluster import SINGLE_THREAD_ENV
from pipeline.manifest import write_rows
from pipeline.models_store import cache_dir
from pipeline.params import PROJECT_PARAMS
from pipeline.video import VideoWriter

ROOT = Path(__file__).resolve().parent.parent
DASK = Path(sys.executable).parent / "dask"
N_FRAMES = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_clip(path: Path, face: np.ndarray, shift: tuple[int, int]) -> None:
    """A short clip of the face photo drifting by ``shift`` px per frame (real motion for the tracker)."""
    h, w = face.shape[:2]
    with VideoWriter(path, fps=25, crf=12) as out:
        for k in range(N_FRAMES):
            warp = np.float32([[1, 0, shift[0] * k], [0, 1, shift[1] * k]])
            out.write(cv2.warpAffine(face, warp, (w, h), borderMode=cv2.BORDER_REFLECT))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from skimage import data

    work = tmp_path_factory.mktemp("scaleout")
    face = cv2.resize(data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    rows = []
    for i, (img, shift) in enumerate([(face, (2, 1)), (np.ascontiguousarray(face[:, ::-1]), (-1, 2))]):
        path = work / f"clip{i}.mp4"
        write_clip(path, img, shift)
        rows.append({"video_id": f"astronaut{i}", "status": "ok", "path": str(path), "start_frame": 0,
                     "end_frame": N_FRAMES - 1, "n_frames": N_FRAMES, "fps": 25.0, "width": 320, "height": 320})
    write_rows(rows, "clips", work / "clips.parquet")
    env = {**os.environ, **SINGLE_THREAD_ENV, "PYTHONPATH": str(ROOT), "WFLWV_MODEL_CACHE": str(cache_dir())}
    return work, env


def write_params(path: Path, scheduler: str | None) -> Path:
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(scheduler=scheduler, n_workers=2, threads_per_worker=1)
    raw["faces"]["min_track_frames"] = N_FRAMES // 2  # the clips are short on purpose
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_stages(work: Path, env: dict[str, str], params: Path, tag: str, kill_a_worker: bool = False
               ) -> tuple[dict[str, Path], str]:
    """Run the faces then the label stage (cwd ``work``: timings logs land there) with a run cache of their own;
    return their outputs and the label stage's log. ``kill_a_worker``: SIGKILL the worker process that runs the first
    label task, mid-task (its temporary cache folder is named after its pid)."""
    out = {name: work / f"{name}_{tag}.parquet" for name in ("faces", "faces_status", "landmarks", "label_status")}
    env = {**env, "WFLWV_CACHE": str(work / f"cache_{tag}")}
    logs = []
    for args in (["stages.faces", "--clips", "clips.parquet", "--out", out["faces"], "--status-out",
                  out["faces_status"]],
                 ["stages.label", "--clips", "clips.parquet", "--faces", out["faces"], "--faces-status",
                  out["faces_status"], "--out", out["landmarks"], "--status-out", out["label_status"]]):
        proc = subprocess.Popen([sys.executable, "-m", *map(str, args), "--params", str(params)], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kill_a_worker and args[0] == "stages.label":
            tmp = work / f"cache_{tag}" / "label" / ".tmp"
            deadline = time.monotonic() + 120
            while not (tmp.is_dir() and any(tmp.iterdir())):
                assert proc.poll() is None and time.monotonic() < deadline, "no label task started"
                time.sleep(0.01)
            os.kill(int(next(tmp.iterdir()).name.split("~")[2]), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{stderr[-3000:]}"
        logs.append(stderr)
    for log in logs:  # not a TTY: no progress bar, the per-video log lines instead
        assert not re.search(r"\d+%\|", log) and "2/2 done" in log, log[-3000:]
    return out, logs[-1]


@pytest.mark.skipif(not DASK.is_file(), reason=f"the dask CLI is not installed ({DASK} missing)")
def test_faces_and_label_on_an_external_scheduler_match_the_local_cluster(project):
    from dask.distributed import Client

    work, env = project
    local, _ = run_stages(work, env, write_params(work / "params_local.yaml", None), "local")

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--name", name, "--no-dashboard", "--memory-limit", "2GiB"],
                                          cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:  # the scheduler needs a moment before it accepts connections
            try:
                client = Client(address, timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, f"no dask scheduler at {address}"
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=60)
            remote, label_log = run_stages(work, env, write_params(work / "params_remote.yaml", address), "remote",
                                           kill_a_worker=True)
            prefixes = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
            cached = client.run(lambda dask_worker: sorted(getattr(dask_worker, "_wflwv_cache", {})))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    assert "run_job" in prefixes  # the stages' tasks went through this scheduler
    # the worker killed mid-task cost only its video: run again elsewhere, counted and said, same result
    assert "computed again after its worker was lost" in label_log and "1 after a lost worker" in label_log
    assert len(cached) == 2 and any(keys for keys in cached.values())  # and models were loaded on its workers
    for name in local:
        a, b = pq.read_table(local[name]), pq.read_table(remote[name])
        assert a.equals(b, check_metadata=True), name
    faces = pq.read_table(local["faces"]).to_pandas()
    landmarks = pq.read_table(local["landmarks"]).to_pandas()
    assert len(faces) == 2 * N_FRAMES and faces.valid.any()  # the tiny input really exercised both stages
    assert set(landmarks.video_id) == {"astronaut0", "astronaut1"} and landmarks.model.nunique() >= 2
