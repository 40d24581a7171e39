"""Scale-out on a real dask cluster: a `dask scheduler` and two `python -m pipeline.worker` processes on 127.0.0.1,
addressed by `cluster.scheduler`, give the faces and label stages the same manifests as the default LocalCluster with
two threads per worker, also when a worker is killed in the middle of a label task; a worker whose environment differs
from the client's refuses every task, and nothing it could have computed is stored."""

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


def write_params(path: Path, scheduler: str | None, n_workers: int = 2, threads_per_worker: int = 1) -> Path:
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(scheduler=scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker)
    raw["faces"]["min_track_frames"] = N_FRAMES // 2  # the clips are short on purpose
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start_scheduler(work: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"tcp://127.0.0.1:{port}", proc


def start_worker(address: str, name: str, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.worker", address, "--nthreads", "1", "--name", name,
                             "--memory-limit", "2GiB"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def connect(address: str, n_workers: int):  # noqa: ANN201 - a dask Client
    from dask.distributed import Client

    deadline = time.monotonic() + 60
    while True:  # the scheduler needs a moment before it accepts connections
        try:
            client = Client(address, timeout=5)
            break
        except OSError:
            assert time.monotonic() < deadline, f"no dask scheduler at {address}"
            time.sleep(0.5)
    client.wait_for_workers(n_workers, timeout=60)
    return client


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
            while not (tmp.is_dir() and any(tmp.glob("*.lock"))):
                assert proc.poll() is None and time.monotonic() < deadline, "no label task started"
                time.sleep(0.01)
            os.kill(int(next(tmp.glob("*.lock")).name.split("~")[2]), signal.SIGKILL)  # the worker of that attempt
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{stderr[-3000:]}"
        logs.append(stderr)
    for log in logs:  # not a TTY: no progress bar, the per-video log lines instead
        assert not re.search(r"\d+%\|", log) and "2/2 done" in log, log[-3000:]
    return out, logs[-1]


@pytest.mark.skipif(not DASK.is_file(), reason=f"the dask CLI is not installed ({DASK} missing)")
def test_faces_and_label_on_pipeline_workers_match_the_local_cluster_with_two_threads(project):
    work, env = project
    local, _ = run_stages(work, env, write_params(work / "params_local.yaml", None, 1, 2), "local")

    address, scheduler = start_scheduler(work, env)
    procs = [scheduler] + [start_worker(address, name, work, env) for name in ("w1", "w2")]
    try:
        with connect(address, 2) as client:
            remote, label_log = run_stages(work, env, write_params(work / "params_remote.yaml", address), "remote",
                                           kill_a_worker=True)
            prefixes = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
            cached = client.run(lambda dask_worker: sorted(getattr(dask_worker, "_wflwv_cache", {})))
            pins = client.run(lambda: {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY")})
    finally:
        stop(procs)

    assert "run_job" in prefixes  # the stages' tasks went through this scheduler
    assert all(p == {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"} for p in pins.values()), pins
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


@pytest.mark.skipif(not DASK.is_file(), reason=f"the dask CLI is not installed ({DASK} missing)")
def test_a_worker_in_another_environment_refuses_every_task_and_nothing_is_stored(project):
    """A worker whose kernel pins differ (a value set by hand, which pin_kernels keeps) would compute other bits
    under the client's keys: it refuses, the status rows say why, the cache stays empty."""
    work, env = project
    address, scheduler = start_scheduler(work, env)
    odd = {**env, "OPENCV_IPP": "sse42"}
    procs = [scheduler, start_worker(address, "odd", work, odd)]
    cache = work / "cache_refused"
    try:
        with connect(address, 1):
            params = write_params(work / "params_refused.yaml", address)
            done = subprocess.run([sys.executable, "-m", "stages.faces", "--clips", "clips.parquet", "--out",
                                   "faces_refused.parquet", "--status-out", "faces_status_refused.parquet",
                                   "--params", str(params)], cwd=work, env={**env, "WFLWV_CACHE": str(cache)},
                                  capture_output=True, text=True, timeout=600, check=False)
    finally:
        stop(procs)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(work / "faces_status_refused.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all("worker odd" in r["error"] and "refused the task" in r["error"] and "ipp" in r["error"]
               for r in rows), rows[0]["error"]
    assert "failed for a reason of this run" in done.stderr
    assert not [p for p in (cache / "faces").glob("??/*")]  # nothing stored
