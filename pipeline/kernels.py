"""Which SIMD kernels the numeric libraries may use: the AVX2 level (x86-64-v3) on every x86-64 machine.

numpy, torch, oneDNN, MKL, OpenBLAS and OpenCV pick kernels by CPU feature at run time, and their AVX-512 kernels
round differently from the AVX2 ones (numpy's moved dlib-68 points by up to 6.6 px, torch's face-api points by
0.03 px: README "The same dataset on every machine"). Every x86-64 machine of this kind has AVX2, so every process
that computes results runs at that level. numpy reads its setting when it is imported, so :func:`pin_kernels` must run
before numpy is: the ``stages`` package calls it first thing, and dask's nanny sets :data:`SAME_KERNELS_ENV` before it
spawns a worker.

Each library is told only what it accepts silently on the machine at hand, so a stage's stderr carries no library
noise (a one-line error stays one line):

- OpenCV warns for every feature named in ``OPENCV_CPU_DISABLE`` that the CPU lacks, so the list names the features
  above AVX2 that ``cv2.checkHardwareSupport`` reports on this CPU (none on an AVX2-only machine: no variable at all);
- numpy refuses (ImportError) a whitelist naming a feature the CPU lacks and warns for one it does not dispatch, so
  ``NPY_ENABLE_CPU_FEATURES`` names the dispatch targets at the AVX2 level that this CPU has. A whitelist, not a
  blacklist: dispatch targets that a later numpy adds above AVX2 stay off without a change here;
- torch's dispatch (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``), MKL (``MKL_ENABLE_INSTRUCTIONS``),
  OpenBLAS (``OPENBLAS_CORETYPE``) and IPP (``OPENCV_IPP``) take an AVX2 cap silently on any AVX2 CPU. MKL's cap alone
  does not make its results reproducible: ``MKL_CBWR=COMPATIBLE`` does, and it is the only MKL branch that gives the
  same results on Intel and AMD CPUs (MKL's conditional numerical reproducibility; torch's BLAS is MKL).

What OpenCV and numpy report is probed once per machine and installation, in a child process that imports them
without any pin (:func:`probe_host`), before the stage imports anything heavy; the answer is cached in
``.cache/kernels/`` (keyed by the CPU's flags and the libraries' installed files) and in this process.
:func:`pin_env` is the pure rule from a probe to the settings (tested for an AVX-512 and an AVX2-only machine).

The model runtimes that pick kernels by CPU with no setting to cap them get CPU-independent ones when
``models.determinism`` is ``exact`` (the default; :func:`model_determinism`): LiteRT models run LiteRT's reference
kernels (:func:`litert_interpreter`: no XNNPACK, no runtime dispatch) and ONNX models run in OpenCV's dnn module
(:class:`ExactOnnx`), whose kernels follow the OpenCV pin above; onnxruntime's MLAS has no such setting. ``fast`` keeps
XNNPACK and onnxruntime (what ``benchmarks/determinism.py`` measures both ways).

This module imports nothing heavy: it must run before numpy (the runtimes are imported where they are used).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["KERNEL_LEVEL", "FIXED_PINS", "OPENCV_ABOVE_AVX2", "NUMPY_AVX2_LEVEL", "PIN_KEYS", "HostFeatures",
           "KernelProbeError", "pin_env", "probe_host", "host_features", "kernel_env", "effective_env", "pin_kernels",
           "kernel_level", "SAME_KERNELS_ENV", "DETERMINISM_ENV", "DETERMINISM_MODES", "model_determinism",
           "litert_interpreter", "OnnxRunner", "onnx_session", "ExactOnnx"]

#: The level every machine computes at, as recorded in manifests.
KERNEL_LEVEL = "x86-64-v3"

#: Settings that every x86-64 CPU with AVX2 accepts silently.
FIXED_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
              "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Haswell", "OPENCV_IPP": "avx2"}

#: OpenCV's features above AVX2: the name ``OPENCV_CPU_DISABLE`` takes and the ``cv::CpuFeatures`` id that
#: ``cv2.checkHardwareSupport`` takes (cv2 exports no constants for them). Disabling a feature disables only that
#: id (AVX512F off leaves AVX512-SKX dispatch on), so every one the CPU has is named.
OPENCV_ABOVE_AVX2 = {
    "AVX512F": 13, "AVX512BW": 14, "AVX512CD": 15, "AVX512DQ": 16, "AVX512ER": 17, "AVX512IFMA": 18, "AVX512PF": 19,
    "AVX512VBMI": 20, "AVX512VL": 21, "AVX512VBMI2": 22, "AVX512VNNI": 23, "AVX512BITALG": 24, "AVX512VPOPCNTDQ": 25,
    "AVX5124VNNIW": 26, "AVX5124FMAPS": 27, "AVX_VNNI": 28, "AVX512-SKX": 256, "AVX512-COMMON": 257,
    "AVX512-KNL": 258, "AVX512-KNM": 259, "AVX512-CNL": 260, "AVX512-CLX": 261, "AVX512-ICL": 262,
}

#: numpy's dispatch targets at or below AVX2, in numpy 2's group names (``X86_V2``, ``X86_V3``) and the single
#: feature names of older releases.
NUMPY_AVX2_LEVEL = frozenset({"SSE", "SSE2", "SSE3", "SSSE3", "SSE41", "POPCNT", "SSE42", "AVX", "F16C", "FMA3", "AVX2",
                              "X86_V2", "X86_V3"})

#: Every variable this module manages (the probe runs without the ones that change what the libraries report).
PIN_KEYS = ("NPY_ENABLE_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE", *FIXED_PINS)
_PROBE_UNSET = ("NPY_ENABLE_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE")
_CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "kernels"

#: Runs in a child process without pins: what OpenCV and numpy report on this CPU, as one JSON line.
_PROBE = """
import json, sys
out = {"opencv": None, "numpy_dispatch": None, "numpy_have": None}
try:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
except ImportError:
    try:
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        __cpu_dispatch__ = None
if __cpu_dispatch__ is not None:
    out["numpy_dispatch"] = list(__cpu_dispatch__)
    out["numpy_have"] = sorted(k for k, on in __cpu_features__.items() if on)
try:
    import cv2
except ImportError:
    pass
else:
    out["opencv"] = [name for name, fid in json.loads(sys.argv[1]).items() if cv2.checkHardwareSupport(fid)]
print(json.dumps(out))
"""


class KernelProbeError(RuntimeError):
    """The child process that asks OpenCV and numpy about the CPU failed; the message says how."""


@dataclass(frozen=True)
class HostFeatures:
    """What the libraries report on one CPU, without pins.

    Attributes:
        opencv: OpenCV feature names above AVX2 that ``cv2.checkHardwareSupport`` finds (None: no OpenCV).
        numpy_dispatch: numpy's dispatch targets, in its order (None: no numpy).
        numpy_have: the numpy features this CPU has (``__cpu_features__`` true).
    """

    opencv: tuple[str, ...] | None
    numpy_dispatch: tuple[str, ...] | None
    numpy_have: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        return {"opencv": None if self.opencv is None else list(self.opencv),
                "numpy_dispatch": None if self.numpy_dispatch is None else list(self.numpy_dispatch),
                "numpy_have": sorted(self.numpy_have)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> HostFeatures:
        """Parse :meth:`to_json`'s form; anything else is a ``ValueError``."""
        def names(value: object, key: str) -> tuple[str, ...] | None:
            if value is None:
                return None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key}: expected a list of names, got {value!r}")
            return tuple(value)

        have = names(data.get("numpy_have"), "numpy_have") or ()
        return cls(names(data.get("opencv"), "opencv"), names(data.get("numpy_dispatch"), "numpy_dispatch"),
                   frozenset(have))


def pin_env(host: HostFeatures) -> dict[str, str]:
    """The settings that keep every library on ``host`` at the AVX2 level, naming only what each accepts silently.

    ``OPENCV_CPU_DISABLE`` lists the features above AVX2 that OpenCV found (absent when there are none);
    ``NPY_ENABLE_CPU_FEATURES`` the dispatch targets at the AVX2 level the CPU has. A numpy whose every dispatch
    target lies above AVX2 has no whitelist to give: it gets the blacklist of those the CPU has instead.
    """
    env = dict(FIXED_PINS)
    if host.opencv:
        known = [name for name in OPENCV_ABOVE_AVX2 if name in set(host.opencv)]
        if known:
            env["OPENCV_CPU_DISABLE"] = ",".join(known)
    if host.numpy_dispatch is not None:
        allowed = [t for t in host.numpy_dispatch if t in NUMPY_AVX2_LEVEL and t in host.numpy_have]
        above = [t for t in host.numpy_dispatch if t not in NUMPY_AVX2_LEVEL and t in host.numpy_have]
        if allowed:
            env["NPY_ENABLE_CPU_FEATURES"] = " ".join(allowed)
        elif above:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)
    return env


def probe_host(timeout: float = 120.0) -> HostFeatures:
    """Ask OpenCV and numpy, in a child Python without pins, what this CPU has (:class:`HostFeatures`)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in _PROBE_UNSET}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(OPENCV_ABOVE_AVX2)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KernelProbeError(f"pipeline.kernels: probing the CPU in a child process failed: {err}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise KernelProbeError(f"pipeline.kernels: probing the CPU in a child process failed: {last}")
    try:
        return HostFeatures.from_json(json.loads(lines[-1]))
    except (ValueError, AttributeError) as err:
        raise KernelProbeError(f"pipeline.kernels: the CPU probe answered {lines[-1][:200]!r}: {err}") from None


def _cache_key() -> str:
    """What the probe's answer depends on: the CPU (its flags), this Python and the installed numpy and OpenCV."""
    import importlib.util

    parts = [sys.executable, sys.version]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            parts += sorted({line for line in fh if line.startswith(("flags", "vendor_id", "model name"))})
    except OSError:
        import platform

        parts.append(platform.processor() or platform.machine())
    for module in ("numpy", "cv2"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
        if origin:
            folder = Path(origin).parent
            stamps = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.so"))
            parts.append(f"{module}:{origin}:{Path(origin).stat().st_mtime_ns}:{stamps}")
        else:
            parts.append(f"{module}:absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


_HOST: HostFeatures | None = None


def host_features(cache_dir: Path | None = None) -> HostFeatures:
    """:func:`probe_host`, once per machine and installation (cached on disk) and once per process."""
    global _HOST
    if _HOST is not None and cache_dir is None:
        return _HOST
    folder = _CACHE_DIR if cache_dir is None else Path(cache_dir)
    path = folder / f"{_cache_key()}.json"
    try:
        host = HostFeatures.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):  # no cache yet, or one not written by this module: probe again
        host = probe_host()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{path.name}.{os.getpid()}"
            tmp.write_text(json.dumps(host.to_json()), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:  # a read-only checkout still runs: it probes once per process
            pass
    if cache_dir is None:
        _HOST = host
    return host


def kernel_env() -> dict[str, str]:
    """:func:`pin_env` for this machine."""
    return pin_env(host_features())


def effective_env(environ: Mapping[str, str], pins: Mapping[str, str]) -> dict[str, str]:
    """The kernel settings a process with environment ``environ`` runs at once ``pins`` are applied: a value the
    user set is kept, and numpy's whitelist is not added beside a blacklist the user set (numpy refuses both)."""
    out = {k: environ[k] for k in PIN_KEYS if environ.get(k)}
    for key, value in pins.items():
        numpy_rival = {"NPY_ENABLE_CPU_FEATURES": "NPY_DISABLE_CPU_FEATURES",
                       "NPY_DISABLE_CPU_FEATURES": "NPY_ENABLE_CPU_FEATURES"}.get(key)
        if key not in out and not (numpy_rival and numpy_rival in out):
            out[key] = value
    return out


def pin_kernels() -> None:
    """Set this machine's pins (:func:`kernel_env`) in this process's environment; values the user set are kept.

    Raises :class:`KernelProbeError` (one line) when the CPU cannot be probed.
    """
    os.environ.update(effective_env(os.environ, kernel_env()))


class _SameKernelsEnv(Mapping[str, str]):
    """The kernel settings of this process (after :func:`pin_kernels`), computed when first read: what worker
    processes are started with."""

    def _env(self) -> dict[str, str]:
        return effective_env(os.environ, kernel_env())

    def __getitem__(self, key: str) -> str:
        return self._env()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env())

    def __len__(self) -> int:
        return len(self._env())

    def __repr__(self) -> str:
        return f"SAME_KERNELS_ENV({self._env()!r})"


#: The settings worker processes get (``pipeline.cluster``); read lazily, so importing this module probes nothing.
SAME_KERNELS_ENV: Mapping[str, str] = _SameKernelsEnv()


def kernel_level(environ: Mapping[str, str] | None = None, host: HostFeatures | None = None) -> dict[str, str]:
    """The SIMD level each library computes at in a process with ``environ`` (default: this one's), in words that
    are the same on every CPU pinned alike: the manifests record it (``kernel_level``).

    ``level`` is :data:`KERNEL_LEVEL` when every setting is this machine's pin, else ``custom``. OpenCV's entry is
    ``AVX2`` when every feature above AVX2 that the CPU has is off (the list itself differs between CPUs). ``models``
    is :func:`model_determinism`: whether the model runtimes ran their exact kernels (so the run cache, which keys on
    this, never serves one mode's outputs to the other).
    """
    env = dict(os.environ if environ is None else environ)
    host = host_features() if host is None else host
    pins = pin_env(host)
    actual = effective_env(env, {})
    out = {"numpy": (actual.get("NPY_ENABLE_CPU_FEATURES") or
                     (f"all but {actual['NPY_DISABLE_CPU_FEATURES']}" if "NPY_DISABLE_CPU_FEATURES" in actual
                      else "native"))}
    disabled = {n.strip() for n in actual.get("OPENCV_CPU_DISABLE", "").split(",") if n.strip()}
    above = set(host.opencv or ())
    out["opencv"] = ("AVX2" if disabled == above else "native" if not disabled
                     else "off: " + ",".join(sorted(disabled)))
    for name, key in (("torch", "ATEN_CPU_CAPABILITY"), ("onednn", "ONEDNN_MAX_CPU_ISA"),
                      ("mkl", "MKL_ENABLE_INSTRUCTIONS"), ("mkl_cbwr", "MKL_CBWR"), ("openblas", "OPENBLAS_CORETYPE"),
                      ("ipp", "OPENCV_IPP")):
        out[name] = actual.get(key, "native")
    return {"level": KERNEL_LEVEL if actual == pins else "custom", **out, "models": model_determinism()}


# --- model runtimes ------------------------------------------------------------------------------------------------

#: Overrides ``models.determinism`` of the project's params.yaml for this process and its workers (as
#: ``$WFLWV_MODEL_MIRROR`` overrides ``models.mirror``).
DETERMINISM_ENV = "WFLWV_DETERMINISM"
DETERMINISM_MODES = ("exact", "fast")


def model_determinism() -> str:
    """``exact`` or ``fast``: ``$WFLWV_DETERMINISM``, else ``models.determinism`` in the project's params.yaml.

    Read where a model is built (on the workers too), like the model mirror; a bad value is a one-line
    ``ValueError`` naming where it came from.
    """
    value = os.environ.get(DETERMINISM_ENV)
    if value:
        if value not in DETERMINISM_MODES:
            raise ValueError(f"${DETERMINISM_ENV}: {value!r} is not one of {list(DETERMINISM_MODES)}")
        return value
    from pipeline.params import PROJECT_PARAMS

    try:
        stamp = PROJECT_PARAMS.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _configured_determinism(str(PROJECT_PARAMS), stamp)


@functools.lru_cache(maxsize=4)
def _configured_determinism(path: str, stamp: int) -> str:
    """``models.determinism`` of the params file ``path`` as of its modification time ``stamp`` (read once)."""
    from pipeline.params import stage_params

    return str(stage_params("models", Path(path)).determinism)


def litert_interpreter(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """A LiteRT interpreter of the ``.tflite`` at ``path``: LiteRT's reference kernels when exact (plain C++ loops
    compiled once for every x86-64 CPU: the same sums everywhere, at ~20× XNNPACK's time), else the default
    resolver with XNNPACK, whose kernels follow the CPU."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if model_determinism() == "exact" else OpResolverType.AUTO
    return Interpreter(str(path), num_threads=threads, experimental_op_resolver_type=resolver)


class OnnxRunner(Protocol):
    """What callers use of an ONNX runner: onnxruntime's ``InferenceSession`` or :class:`ExactOnnx`."""

    def get_inputs(self) -> Any: ...

    def run(self, output_names: Any, input_feed: Any) -> Any: ...


def onnx_session(model: bytes, threads: int = 1) -> OnnxRunner:
    """A runner of the ONNX graph ``model`` with onnxruntime's ``get_inputs()`` and ``run(names, feeds)``:
    :class:`ExactOnnx` when exact, else an onnxruntime CPU session of ``threads`` threads."""
    if model_determinism() == "exact":
        return ExactOnnx(model)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3  # exports with unused batch-norm counters warn about them: noise
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class _Input:
    name: str  # onnxruntime's NodeArg spelling, so callers take either runner


#: onnxruntime's optimisers that compute new float weights; the shape folding below runs without them.
_FLOAT_REWRITES = ["ConvAddFusion", "ConvMulFusion", "ConvBNFusion", "ConvActivationFusion", "GemmActivationFusion",
                   "MatMulAddFusion", "MatMulScaleFusion", "ReluClipFusion", "DoubleQDQPairsRemover"]


class ExactOnnx:
    """An ONNX graph run by OpenCV's dnn module, whose kernels follow ``OPENCV_CPU_DISABLE`` (the AVX2 pin) and do
    not depend on the thread count: the same outputs on every x86-64 CPU, unlike onnxruntime's MLAS.

    cv2.dnn needs static shapes: one network per input shape (a few per run: frames of one size are padded alike),
    with the graph's shape arithmetic (``Shape`` → ``Gather`` → ``Reshape``/``Resize``) folded into constants first by
    onnxruntime's graph optimiser with every float-rewriting fusion off, and checked to hold exactly the published
    float tensors. Outputs agree with onnxruntime within 1e-4 on this project's models (``tests/pipeline/
    test_kernels.py``, ``benchmarks/determinism.py``).
    """

    max_shapes = 8

    def __init__(self, model: bytes) -> None:
        import onnx

        self._model = onnx.load_from_string(model)
        graph = self._model.graph
        weights = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in weights]  # older exports list weights as inputs too
        del graph.input[:]
        graph.input.extend(inputs)
        self._inputs = [i.name for i in inputs]
        self.output_names = [o.name for o in self._model.graph.output]
        self._nets: dict[tuple[tuple[int, ...], ...], object] = {}

    def get_inputs(self) -> list[_Input]:
        return [_Input(name) for name in self._inputs]

    def run(self, output_names: list[str] | None, input_feed: Mapping[str, Any]) -> list[Any]:
        """The named outputs (all when None) for ``input_feed`` (input name → float32 array), as onnxruntime's."""
        import numpy as np

        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in input_feed.items()}
        shapes = tuple(tuple(int(d) for d in arrays[name].shape) for name in self._inputs)
        net = self._nets.get(shapes)
        if net is None:
            if len(self._nets) >= self.max_shapes:
                self._nets.pop(next(iter(self._nets)))
            net = self._nets[shapes] = self._network(dict(zip(self._inputs, shapes)))
        for name, value in arrays.items():
            net.setInput(value, name)  # type: ignore[attr-defined]
        outs = net.forward(list(output_names or self.output_names))  # type: ignore[attr-defined]
        return [np.array(o) for o in outs]

    def static_graph(self, shapes: Mapping[str, tuple[int, ...]]) -> bytes:
        """The graph with fixed input ``shapes`` and its shape arithmetic folded (float tensors unchanged)."""
        import tempfile

        import onnx
        import onnxruntime as ort
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        outputs = {o.name: [d.dim_value or d.dim_param or f"out_{o.name}_{k}"
                            for k, d in enumerate(o.type.tensor_type.shape.dim)] for o in self._model.graph.output}
        fixed = update_inputs_outputs_dims(onnx.ModelProto.FromString(self._model.SerializeToString()),
                                           {k: list(v) for k, v in shapes.items()}, outputs)
        if not any(n.op_type == "Shape" for n in fixed.graph.node):
            return bytes(fixed.SerializeToString())
        with tempfile.TemporaryDirectory() as tmp:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = os.path.join(tmp, "static.onnx")
            options.log_severity_level = 3
            ort.InferenceSession(fixed.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=_FLOAT_REWRITES)
            folded = Path(options.optimized_model_filepath).read_bytes()
        new = _float_tensors(onnx.load_from_string(folded)) - _float_tensors(self._model)
        if new:
            raise RuntimeError(f"folding the ONNX graph's shapes changed {len(new)} float tensors: not run exactly")
        return folded

    def _network(self, shapes: Mapping[str, tuple[int, ...]]) -> object:
        import cv2
        import numpy as np

        net = cv2.dnn.readNetFromONNX(np.frombuffer(self.static_graph(shapes), np.uint8))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        return net


def _float_tensors(model: object) -> set[str]:
    """Digests of every float tensor (initialisers and constants) of an ONNX model."""
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.HasField("t")]
    out = set()
    for tensor in tensors:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f":
            out.add(hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest())
    return out
