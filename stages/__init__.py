"""One thin command-line module per DVC stage: read params, call the library, write a manifest."""

from pipeline.kernels import pin_kernels

pin_kernels()  # before any stage imports numpy: the same SIMD kernels on every machine (pipeline/kernels.py)
