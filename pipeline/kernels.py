"""Which SIMD kernels the numeric libraries may use: one level for every machine of this kind.

numpy, torch, oneDNN, MKL, OpenBLAS and OpenCV pick kernels by CPU feature at run time, and their AVX-512 kernels
round differently from the AVX2 ones (numpy's moved dlib-68 points by up to 6.6 px, torch's face-api points by
0.03 px: README "The same dataset on every machine"). Every x86-64 machine of this kind has AVX2, so every process
that computes results runs at that level. numpy reads its setting when it is imported, so :func:`pin_kernels` must run
before numpy is: the ``stages`` package calls it first thing, and dask's nanny sets it before it spawns a worker.

This module imports nothing: it must be importable before numpy.
"""

from __future__ import annotations

import os

__all__ = ["SAME_KERNELS_ENV", "pin_kernels"]

SAME_KERNELS_ENV = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "ATEN_CPU_CAPABILITY": "avx2",
                    "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
                    "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-ICL,AVX512-COMMON,AVX512F",
                    "OPENCV_IPP": "avx2"}


def pin_kernels() -> None:
    """Set :data:`SAME_KERNELS_ENV` in this process (values already set by the user are kept)."""
    for key, value in SAME_KERNELS_ENV.items():
        os.environ.setdefault(key, value)
