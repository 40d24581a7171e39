"""Running per-video work on dask: a LocalCluster by default, or an existing cluster by scheduler address.

Tasks receive small arguments (ids, paths, params) and return small dicts (manifest rows); frames never travel
through the scheduler. Models are loaded once per worker with :func:`worker_cached`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from dask.distributed import Client, LocalCluster, as_completed, get_worker

from pipeline.params import ClusterParams

__all__ = ["dask_client", "map_videos", "worker_cached"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_LOCAL_CACHE: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()


@contextmanager
def dask_client(params: ClusterParams) -> Iterator[Client]:
    """Connect to ``params.scheduler`` if set, else start (and later stop) a LocalCluster of worker processes."""
    if params.scheduler:
        log.info("connecting to dask scheduler %s", params.scheduler)
        with Client(params.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=params.n_workers, threads_per_worker=params.threads_per_worker,
                      processes=True, memory_limit=params.memory_limit, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def worker_cached(key: str, factory: Callable[[], T]) -> T:
    """Return ``factory()`` built once per dask worker (or once per process outside dask)."""
    try:
        worker = get_worker()
    except ValueError:  # not inside a dask worker
        cache = _LOCAL_CACHE
    else:
        if not hasattr(worker, "_wflwv_cache"):
            worker._wflwv_cache = {}
        cache = worker._wflwv_cache
    with _LOCAL_LOCK:
        if key not in cache:
            cache[key] = factory()
        return cache[key]


def map_videos(
    fn: Callable[..., dict[str, Any]],
    items: Sequence[Any],
    cluster: ClusterParams,
    on_error: Callable[[Any, BaseException], dict[str, Any]],
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run ``fn(item, **kwargs)`` for every item on dask and return the rows in input order.

    ``fn`` should turn per-video failures into rows itself; anything that still escapes (a crashed worker, a bug)
    becomes ``on_error(item, exc)`` so one bad video never stops the run.
    """
    if not items:
        return []
    results: list[dict[str, Any] | None] = [None] * len(items)
    with dask_client(cluster) as client:
        futures = {client.submit(fn, item, pure=False, **kwargs): i for i, item in enumerate(items)}
        done = 0
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as err:  # noqa: BLE001 - every escaped failure becomes that video's status row
                log.error("task for %r failed: %s: %s", items[index], type(err).__name__, err)
                results[index] = on_error(items[index], err)
            done += 1
            log.info("%d/%d done", done, len(items))
    return [r for r in results if r is not None]
