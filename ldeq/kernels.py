"""torch on the CPU computing the same way on every x86-64 machine (with ``pipeline.kernels``' SIMD pins): one module
that model code outside LDEQ (the face-api port) can use without importing LDEQ itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["exact_cpu_kernels"]


#: torch's settings are process-global: one exact block at a time, so that threads never see each other's switch.
_EXACT = threading.RLock()


@contextmanager
def exact_cpu_kernels(threads: int = 1) -> Iterator[None]:
    """Inside the block, torch computes on the CPU the same way on every x86-64 machine (given the SIMD pins of
    ``pipeline.kernels``): a fixed number of threads (ATen and MKL split float reductions by thread, so the result
    would follow the core count), ATen's own convolutions instead of oneDNN's and NNPACK's (both block their loops by
    the CPU's cache sizes, so their sums run in another order on another CPU; ATen's go through MKL's GEMM, which
    ``MKL_CBWR=COMPATIBLE`` makes reproducible across CPU vendors), and deterministic algorithms only.

    A training step of the demo profile costs about 2.5× oneDNN's time at one thread, an inference frame 1.4×
    (``benchmarks/determinism.py``). The previous settings come back on exit; blocks of several threads take turns.
    """
    with _EXACT:
        yield from _exact_block(threads)


def _exact_block(threads: int) -> Iterator[None]:
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # the flag itself, not torch.backends.mkldnn.flags(): that one also sets TF32 and warns about it on stderr
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module flag, typed as its descriptor
    try:
        with torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.backends.mkldnn.enabled = before[2]
