"""A dask worker for the pipeline's stages on another machine: ``python -m pipeline.worker <scheduler address>``.

It is set up as the LocalCluster's workers are (:func:`pipeline.cluster.dask_client`): the SIMD kernel pins and the
single-thread pins are in the environment before numpy loads (here, and in the worker process its nanny spawns),
:func:`pipeline.cluster.pin_threads` runs in that process before it takes a task, and dask's batch settings
(:data:`pipeline.cluster.BATCH_DASK_CONFIG`) apply. At start it reports which model files it lacks. Every task then
compares this worker's environment (code, package versions, FFmpeg, pins, CPU level, model files) with the client's
and refuses to compute when they differ (:func:`pipeline.runcache.worker_refusal`), so results of another
environment are never stored under the client's keys.

Run it from a checkout of the same commit, with the same environment (``make setup``) and model files
(``make models``). ``dask worker <address> --preload pipeline.worker`` is equivalent for the worker process, but
its nanny does not set the pins before the worker's numpy loads: prefer this module.
"""

from pipeline.kernels import pin_kernels

pin_kernels()  # before anything imports numpy: this process, and the environment its nannies pass on

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

__all__ = ["main", "dask_setup"]

log = logging.getLogger("pipeline.worker")


def dask_setup(worker: Any) -> None:
    """dask's preload hook, run in the worker process before it takes tasks: one thread per numeric library and
    glibc's malloc tuned (:func:`pipeline.cluster.pin_threads`)."""
    from pipeline.cluster import pin_threads

    pin_threads()


def _missing_models() -> dict[str, str]:
    from pipeline.models_store import status

    return {key: state for key, state in status().items() if state != "ok"}


async def _serve(address: str, nworkers: int, nthreads: int, name: str | None, memory_limit: str) -> None:
    import dask
    from distributed import Nanny

    from pipeline.cluster import SINGLE_THREAD_ENV, batch_dask_config

    with dask.config.set(batch_dask_config()):  # the nannies hand it (pre-spawn pins included) to their workers
        nannies = [Nanny(address, nthreads=nthreads, memory_limit=memory_limit, env=dict(SINGLE_THREAD_ENV),
                         preload=["pipeline.worker"],
                         name=None if name is None else (name if nworkers == 1 else f"{name}-{i}"))
                   for i in range(nworkers)]
        await asyncio.gather(*nannies)  # start them; each connects to the scheduler
        log.info("%d worker(s) of %d thread(s) connected to %s", nworkers, nthreads, address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        finished = [asyncio.ensure_future(n.finished()) for n in nannies]
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, *finished], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(n.close() for n in nannies), return_exceptions=True)
        waiter.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.worker", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("scheduler", help="the dask scheduler's address, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--nworkers", type=int, default=1, help="worker processes")
    parser.add_argument("--nthreads", type=int, default=1, help="task threads per worker (models are per thread)")
    parser.add_argument("--name", default=None, help="worker name (with --nworkers > 1: <name>-<i>)")
    parser.add_argument("--memory-limit", default="auto", help="per worker, e.g. 4GiB (auto: a share of the RAM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.nworkers < 1 or args.nthreads < 1:
        print("error: --nworkers and --nthreads must be >= 1", file=sys.stderr)
        return 2
    from pipeline.cluster import SINGLE_THREAD_ENV

    os.environ.update(SINGLE_THREAD_ENV)
    for key, reason in _missing_models().items():
        log.warning("model %s is not available on this worker: %s", key, reason)
    try:
        asyncio.run(_serve(args.scheduler, args.nworkers, args.nthreads, args.name, args.memory_limit))
    except OSError as err:  # no scheduler at that address
        print(f"error: {args.scheduler}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
