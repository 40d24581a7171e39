import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from pipeline.cluster import dask_client, map_videos, worker_cached
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.runcache import environment

ROOT = Path(__file__).resolve().parents[2]

CLUSTER = stage_params("cluster", PROJECT_PARAMS, n_workers=2, threads_per_worker=1, memory_limit="1GiB")


def square_or_fail(item: int) -> dict:
    if item == 3:
        raise RuntimeError("video 3 is broken")
    return {"video_id": item, "value": item * item, "pid": os.getpid()}


BUILDS: list[str] = []  # per process: every factory call appends here


def _build_token() -> str:
    token = uuid.uuid4().hex  # unique per build, unlike id(), which a freed object's successor may reuse
    BUILDS.append(token)
    return token


def cached_token(item: int) -> dict:
    token = worker_cached("token", _build_token)
    return {"video_id": item, "pid": os.getpid(), "token": token, "builds": len(BUILDS)}


def test_map_videos_keeps_order_and_turns_failures_into_rows():
    rows = map_videos(square_or_fail, list(range(6)), CLUSTER,
                      on_error=lambda item, err: {"video_id": item, "status": "error", "error": str(err)})
    assert [r["video_id"] for r in rows] == list(range(6))
    assert rows[3] == {"video_id": 3, "status": "error", "error": "video 3 is broken"}
    assert [r["value"] for r in rows if "value" in r] == [0, 1, 4, 16, 25]
    assert all(r["pid"] != os.getpid() for r in rows if "pid" in r)  # ran in real worker processes


def test_worker_cache_builds_once_per_worker():
    rows = map_videos(cached_token, list(range(12)), CLUSTER, on_error=lambda i, e: {})
    assert len(rows) == 12
    per_worker: dict[int, set[str]] = {}
    for r in rows:
        per_worker.setdefault(r["pid"], set()).add(r["token"])
    assert all(len(tokens) == 1 for tokens in per_worker.values())  # one object per worker process
    assert all(r["builds"] == 1 for r in rows)  # the factory ran exactly once in each worker
    assert len({t for tokens in per_worker.values() for t in tokens}) == len(per_worker)


def concurrent_model(item: int) -> dict:
    """Two tasks running at once in the two threads of one worker, each asking for the same model."""
    from distributed import get_worker

    barrier = get_worker().__dict__.setdefault("_test_barrier", threading.Barrier(2, timeout=60))
    barrier.wait()  # both tasks are running now
    return {"video_id": item, "thread": threading.get_ident(), "token": worker_cached("model", _build_token)}


def test_a_model_is_never_shared_by_two_threads_of_a_worker():
    """LiteRT interpreters (BlazeFace, MediaPipe's mesh) hold their tensors: two threads calling one at once read
    each other's results. With threads_per_worker 2 each thread gets its own."""
    two_threads = stage_params("cluster", PROJECT_PARAMS, n_workers=1, threads_per_worker=2, memory_limit="1GiB")
    rows = map_videos(concurrent_model, [0, 1], two_threads, on_error=lambda i, e: {"error": repr(e)})
    assert all("token" in r for r in rows), rows
    assert len({r["thread"] for r in rows}) == 2  # really two threads at once
    assert len({r["token"] for r in rows}) == 2  # and two models


def worker_environment(item: int) -> dict:
    return {"video_id": item, "env": environment("trim", stage_params("trim", PROJECT_PARAMS))}


def test_local_cluster_workers_compute_in_the_clients_environment():
    """What the run cache's key names (packages, FFmpeg, kernel pins and level, code) is what the workers see."""
    rows = map_videos(worker_environment, [0], CLUSTER, on_error=lambda i, e: {"error": repr(e)})
    assert rows[0].get("env") == environment("trim", stage_params("trim", PROJECT_PARAMS)), rows


def test_existing_scheduler_address_is_used():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        params = stage_params("cluster", PROJECT_PARAMS, scheduler=cluster.scheduler_address)
        with dask_client(params) as client:
            assert client.scheduler.address == cluster.scheduler_address
        rows = map_videos(square_or_fail, [2, 4], params, on_error=lambda i, e: {})
        assert [r["value"] for r in rows] == [4, 16]


def frame_allocation_faults(item: int) -> dict:
    """Minor page faults of allocating, filling and freeing a 720p RGB frame 20 times in this worker."""
    import resource

    import numpy as np

    np.ones((720, 1280, 3), np.uint8).sum()  # first touch: the heap grows once
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        frame = np.ones((720, 1280, 3), np.uint8)
        frame.sum()
        del frame
    return {"video_id": item, "faults": resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before,
            "trim_env": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def test_workers_reuse_frame_memory_instead_of_faulting_it_in_per_frame():
    # dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_, which makes glibc mmap every frame-sized array afresh
    # (~675 page faults per 2.7 MB frame); pin_threads resets the thresholds so the heap is reused
    rows = map_videos(frame_allocation_faults, [0, 1], CLUSTER, on_error=lambda i, e: {"error": str(e)})
    assert all("faults" in r for r in rows), rows
    assert rows[0]["trim_env"] is not None  # the condition this guards against is really there
    assert all(r["faults"] < 20 * 675 / 10 for r in rows), rows


def worker_settings(item: int) -> dict:
    import dask

    return {"video_id": item, "profile": dask.config.get("distributed.worker.profile.enabled"),
            "tick": dask.config.get("distributed.admin.tick.interval")}


def test_local_cluster_workers_run_with_the_batch_configuration():
    rows = map_videos(worker_settings, [0, 1], CLUSTER, on_error=lambda i, e: {"error": str(e)})
    assert [(r["profile"], r["tick"]) for r in rows] == [(False, "1s")] * 2


def _x86_v4() -> bool:
    from numpy._core._multiarray_umath import __cpu_features__

    return bool(__cpu_features__.get("X86_V4", False))


def test_workers_and_stage_processes_run_numpy_at_the_pinned_simd_level():
    """numpy reads its dispatch setting at import: the nanny sets it before spawning workers, the stages package before
    any stage imports numpy (pipeline/kernels.py). Without that, AVX-512 machines computed other landmarks."""
    with dask_client(CLUSTER) as client:
        assert set(client.run(_x86_v4).values()) == {False}
    code = ("import stages, numpy\nfrom numpy._core._multiarray_umath import __cpu_features__ as f\n"
            "print(f.get('X86_V4', False))")
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
