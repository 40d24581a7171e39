"""Running per-video work on dask: a LocalCluster by default, or an existing cluster by scheduler address.

Tasks receive small arguments (ids, paths, params) and return small dicts (manifest rows); frames never travel
through the scheduler. Models are loaded once per worker thread with :func:`worker_cached`. Workers of an external
cluster are started with ``python -m pipeline.worker <scheduler>`` (:mod:`pipeline.worker`), which sets them up as
:func:`dask_client` sets up the LocalCluster's.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import dask
from dask.distributed import Client, LocalCluster, as_completed, get_worker
from tqdm import tqdm

from pipeline.kernels import SAME_KERNELS_ENV, pin_kernels
from pipeline.manifest import OutputError
from pipeline.params import ClusterParams

__all__ = ["dask_client", "imap_videos", "map_videos", "worker_cached", "show_progress", "worker_spawn_environ",
           "BATCH_DASK_CONFIG", "batch_dask_config", "SINGLE_THREAD_ENV", "pin_threads"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_LOCAL_CACHE: dict[tuple[str, int], Any] = {}
_LOCAL_LOCK = threading.Lock()
_MISSING = object()


#: Every numeric library in a worker runs one thread: results of float reductions depend on how work is split
#: across threads, and dask already runs one task per core. Set before the libraries load (LocalCluster workers
#: inherit it) and again by :func:`pin_threads` on workers of an external cluster.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


#: glibc malloc on workers: blocks up to 32 MiB (decoded frames, crops, model tensors) come from the heap and are
#: reused, and up to 128 MiB of free heap is kept. dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
#: which also freezes glibc's adaptive mmap threshold at 128 KiB: every frame-sized array is then a fresh mmap whose
#: pages are faulted in and zeroed by the kernel, which made each faces task 25-40 % slower than the same call
#: outside dask and the two workers of a 2-core machine contend in the kernel (``benchmarks/scaling.py``).
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 128 * 1024 * 1024


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MALLOC_MMAP_THRESHOLD`, :data:`MALLOC_TRIM_THRESHOLD`) in this
    process; False where the C library has no ``mallopt`` (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold,
                                                                                     MALLOC_TRIM_THRESHOLD))


def pin_threads() -> None:
    """One thread for torch and OpenCV in this process (onnxruntime and LiteRT sessions set theirs when built), and
    :func:`tune_malloc`."""
    import os

    os.environ.update(SINGLE_THREAD_ENV)
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    tune_malloc()


#: dask settings for the LocalCluster and for ``python -m pipeline.worker``: tasks here are whole videos (seconds to
#: minutes each), so dask's interactive defaults — a statistical profiler sampling every task thread's stack each
#: 10 ms, an event-loop tick every 20 ms, a system monitor every 0.5 s — buy nothing and cost about a tenth of a core
#: per worker plus the scheduler's, which on a machine with one worker per core comes out of the tasks
#: (``benchmarks/scaling.py``). The nanny's pre-spawn environment comes from :func:`worker_spawn_environ`.
BATCH_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def worker_spawn_environ() -> dict[str, str]:
    """What a nanny sets before it spawns a worker process: the thread pins and this process's kernel pins
    (:func:`pipeline.kernels.pin_kernels` first, so the values are the ones this process computes with; numpy reads
    its dispatch settings at import, before dask's ``env=`` applies). It replaces dask's default,
    ``MALLOC_TRIM_THRESHOLD_=65536``, which :func:`tune_malloc` overrides anyway."""
    pin_kernels()
    return {**SINGLE_THREAD_ENV, **SAME_KERNELS_ENV}


def batch_dask_config() -> dict[str, Any]:
    """:data:`BATCH_DASK_CONFIG` with the pre-spawn environment of :func:`worker_spawn_environ`."""
    return {**BATCH_DASK_CONFIG, "distributed.nanny.pre-spawn-environ": worker_spawn_environ()}


@contextmanager
def dask_client(params: ClusterParams) -> Iterator[Client]:
    """Connect to ``params.scheduler`` if set, else start (and later stop) a LocalCluster of worker processes
    configured for batch work (:data:`BATCH_DASK_CONFIG`).

    Every worker gets :func:`pin_threads`, so results do not depend on the worker's core count. Each task checks
    that its worker computes as this process would (:func:`pipeline.runcache.worker_refusal`).
    """
    if params.kind in ("slurm", "kubernetes"):  # issue #31 hook: Slurm jobs or pods (pipeline/cluster_backends.py)
        from pipeline.cluster_backends import external_client

        with external_client(params, pin_threads) as client:
            yield client
        return
    if params.scheduler:
        log.info("connecting to dask scheduler %s", params.scheduler)
        with Client(params.scheduler) as client:
            client.run(pin_threads)
            yield client
        return
    with dask.config.set(batch_dask_config()):  # the nannies hand this configuration to the worker processes
        with LocalCluster(n_workers=params.n_workers, threads_per_worker=params.threads_per_worker,
                          processes=True, memory_limit=params.memory_limit, dashboard_address=None,
                          env=SINGLE_THREAD_ENV) as cluster:
            with Client(cluster) as client:
                client.run(pin_threads)
                yield client


def worker_cached(key: str, factory: Callable[[], T]) -> T:
    """Return ``factory()`` built once per thread of a dask worker (or per thread of a process outside dask).

    Per thread, because the models are not thread-safe: a LiteRT interpreter (BlazeFace, MediaPipe's mesh) holds its
    input and output tensors, so two tasks of a worker with ``threads_per_worker > 1`` calling one interpreter at
    once would read each other's results. dask's task threads live as long as their worker, so each builds once.
    """
    try:
        worker = get_worker()
    except ValueError:  # not inside a dask worker
        cache = _LOCAL_CACHE
    else:
        with _LOCAL_LOCK:
            if not hasattr(worker, "_wflwv_cache"):
                setattr(worker, "_wflwv_cache", {})  # noqa: B010 - an attribute of our own on dask's Worker
        cache = getattr(worker, "_wflwv_cache")  # noqa: B009
    slot = (key, threading.get_ident())
    with _LOCAL_LOCK:
        found = cache.get(slot, _MISSING)
    if found is _MISSING:  # built outside the lock: a factory may itself use worker_cached
        found = factory()
        with _LOCAL_LOCK:
            cache[slot] = found
    return cast(T, found)


def imap_videos(
    fn: Callable[..., dict[str, Any]],
    items: Sequence[Any],
    cluster: ClusterParams,
    /,
    on_error: Callable[[Any, BaseException], dict[str, Any]],
    **kwargs: Any,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run ``fn(item, **kwargs)`` for every item on dask; yield ``(index, result)`` as each finishes.

    At most a bounded window of tasks (twice the cluster's threads, at least 4) is submitted at a time, so the
    scheduler and this client hold a few videos' state, not the dataset's. ``fn`` should turn per-video failures into
    rows itself; anything that still escapes (a bug, a video whose worker died ``allowed-failures`` times) becomes
    ``on_error(item, exc)`` so one bad video never stops the run. A worker that dies costs only its in-flight
    videos: dask runs them again on another worker.
    """
    if not items:
        return
    with dask_client(cluster) as client:
        window = max(4, 2 * sum(client.nthreads().values()))
        todo = iter(enumerate(items))
        running: dict[Any, int] = {}
        queue = as_completed()

        def submit_next() -> None:
            for index, item in todo:
                future = client.submit(fn, item, pure=False, **kwargs)
                running[future] = index
                queue.add(future)
                return

        for _ in range(window):
            submit_next()
        show = show_progress()
        with tqdm(total=len(items), desc=getattr(fn, "__name__", "tasks").strip("_"), unit="video", disable=not show,
                  dynamic_ncols=True) as bar:
            for done, future in enumerate(queue, start=1):
                index = running.pop(future)
                try:
                    result = future.result()
                except OutputError:
                    raise  # the run's output cannot be written: the stage ends in one line, not a video's row
                except Exception as err:  # noqa: BLE001 - every escaped failure becomes that video's status row
                    log.error("task for %r failed: %s: %s", items[index], type(err).__name__, err)
                    result = on_error(items[index], err)
                future.release()
                submit_next()
                bar.update()
                if not show:  # logs stand in for the bar where nobody watches a terminal
                    log.info("%d/%d done", done, len(items))
                yield index, result


def map_videos(
    fn: Callable[..., dict[str, Any]],
    items: Sequence[Any],
    cluster: ClusterParams,
    /,
    on_error: Callable[[Any, BaseException], dict[str, Any]],
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`imap_videos`, collected in input order (for stages whose results are small rows)."""
    results: list[dict[str, Any] | None] = [None] * len(items)
    for index, result in imap_videos(fn, items, cluster, on_error, **kwargs):
        results[index] = result
    return [r for r in results if r is not None]


def show_progress() -> bool:
    """Progress bars only for a person at a terminal: stderr is a TTY and no ``CI`` variable is set."""
    return sys.stderr.isatty() and not os.environ.get("CI")
