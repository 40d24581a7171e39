"""One thin command-line module per DVC stage: read params, call the library, write a manifest."""

import sys

from pipeline.kernels import KernelProbeError, pin_kernels

try:
    pin_kernels()  # before any stage imports numpy: the same SIMD kernels on every machine (pipeline/kernels.py)
except KernelProbeError as err:  # one line, like every other error of a stage
    sys.exit(f"error: {err}")
