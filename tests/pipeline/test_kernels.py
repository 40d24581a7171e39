"""The SIMD pins: built from what each library reports on the CPU at hand, so they are silent on any x86-64 machine
with AVX2 (this one, and the AVX2-only AMD EPYC of issue 29), and they take effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kernels import (
    DETERMINISM_ENV,
    FIXED_PINS,
    KERNEL_LEVEL,
    OPENCV_ABOVE_AVX2,
    PIN_KEYS,
    ExactOnnx,
    HostFeatures,
    KernelProbeError,
    effective_env,
    host_features,
    kernel_level,
    litert_interpreter,
    model_determinism,
    pin_env,
    probe_host,
)

ROOT = Path(__file__).resolve().parents[2]
NUMPY_DISPATCH = ("X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR")  # numpy 2.4's x86 dispatch targets
_BASELINE = {"MMX", "SSE", "SSE2", "SSE3", "SSSE3", "SSE41", "POPCNT", "SSE42", "X86_V2", "LAHF", "CX16"}
_V3 = {"AVX", "F16C", "FMA3", "AVX2", "BMI", "BMI2", "LZCNT", "MOVBE", "X86_V3"}
#: The AVX2-only machine of issue 29 (AMD EPYC: AVX2, FMA, SHA-NI, VAES), as OpenCV and numpy report it there.
AVX2_ONLY = HostFeatures(opencv=(), numpy_dispatch=NUMPY_DISPATCH,
                         numpy_have=frozenset(_BASELINE | _V3 | {"VAES", "VPCLMULQDQ"}))
#: An AVX-512 machine as this one reports it (Sapphire Rapids class: everything but the Xeon Phi features).
AVX512 = HostFeatures(
    opencv=tuple(n for n in OPENCV_ABOVE_AVX2 if n not in {"AVX512ER", "AVX512PF", "AVX5124VNNIW", "AVX5124FMAPS",
                                                           "AVX512-KNL", "AVX512-KNM"}),
    numpy_dispatch=NUMPY_DISPATCH,
    numpy_have=frozenset(_BASELINE | _V3 | {"AVX512F", "AVX512CD", "AVX512VL", "AVX512BW", "AVX512DQ", "AVX512_SKX",
                                            "AVX512_CLX", "AVX512_CNL", "AVX512_ICL", "AVX512_SPR", "X86_V4"}))


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any kernel setting (as a fresh shell has it), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in PIN_KEYS}, "PYTHONPATH": str(ROOT), **extra}


def test_an_avx2_only_machine_gets_no_opencv_list_and_numpy_only_its_avx2_target():
    env = pin_env(AVX2_ONLY)
    assert "OPENCV_CPU_DISABLE" not in env  # OpenCV warns for each named feature the CPU lacks: name none
    assert env["NPY_ENABLE_CPU_FEATURES"] == "X86_V3"  # never X86_V4: numpy refuses to enable what the CPU lacks
    assert "NPY_DISABLE_CPU_FEATURES" not in env
    assert {k: env[k] for k in FIXED_PINS} == FIXED_PINS
    assert env["MKL_CBWR"] == "COMPATIBLE"


def test_an_avx512_machine_switches_off_each_feature_above_avx2_that_it_has():
    env = pin_env(AVX512)
    disabled = env["OPENCV_CPU_DISABLE"].split(",")
    assert "AVX512-SKX" in disabled and "AVX512F" in disabled and "AVX_VNNI" in disabled
    assert not {"AVX512ER", "AVX512PF", "AVX512-KNL", "AVX512-KNM"} & set(disabled)  # Xeon Phi only: would warn
    assert env["NPY_ENABLE_CPU_FEATURES"] == "X86_V3"


def test_both_machines_record_the_same_kernel_level():
    levels = [kernel_level(pin_env(host), host) for host in (AVX2_ONLY, AVX512)]
    assert levels[0] == levels[1]
    assert levels[0]["level"] == KERNEL_LEVEL and levels[0]["opencv"] == "AVX2" and levels[0]["numpy"] == "X86_V3"
    assert levels[0]["models"] == "exact"  # the model runtimes' kernels too (models.determinism)
    unpinned = kernel_level({}, AVX512)
    assert unpinned["level"] == "custom" and unpinned["opencv"] == "native" and unpinned["numpy"] == "native"


def test_a_numpy_without_an_avx2_target_gets_the_blacklist_of_what_the_cpu_has():
    host = HostFeatures(opencv=(), numpy_dispatch=("X86_V4", "AVX512_ICL", "AVX512_SPR"),
                        numpy_have=frozenset(_BASELINE | _V3 | {"X86_V4", "AVX512_ICL"}))
    env = pin_env(host)
    assert env["NPY_DISABLE_CPU_FEATURES"] == "X86_V4 AVX512_ICL" and "NPY_ENABLE_CPU_FEATURES" not in env


def test_user_settings_are_kept_and_numpy_never_gets_both_lists():
    pins = pin_env(AVX512)
    mine = effective_env({"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4", "OPENCV_IPP": "disabled", "HOME": "/x"}, pins)
    assert mine["NPY_DISABLE_CPU_FEATURES"] == "X86_V3 X86_V4" and "NPY_ENABLE_CPU_FEATURES" not in mine
    assert mine["OPENCV_IPP"] == "disabled" and mine["MKL_CBWR"] == "COMPATIBLE" and "HOME" not in mine


#: OpenCV's names and the Linux kernel's /proc/cpuinfo flags for the same features (an independent witness).
_CPUINFO_FLAGS = {"AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512CD": "avx512cd", "AVX512DQ": "avx512dq",
                  "AVX512VL": "avx512vl", "AVX512ER": "avx512er", "AVX512PF": "avx512pf", "AVX_VNNI": "avx_vnni"}


def test_the_probe_reports_what_the_cpu_has():
    pytest.importorskip("cv2")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to check the probe against")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    host = probe_host()
    assert {n for n in _CPUINFO_FLAGS if n in (host.opencv or ())} == {n for n, f in _CPUINFO_FLAGS.items()
                                                                       if f in flags}
    assert ("X86_V3" in host.numpy_have) == ("avx2" in flags and "fma" in flags)
    assert ("X86_V4" in host.numpy_have) == ({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags)


_EFFECT = """
import json, stages, cv2, numpy, torch
from numpy._core._multiarray_umath import __cpu_features__ as f
print(json.dumps({"cv": cv2.getCPUFeaturesLine(), "np_v3": f["X86_V3"], "np_v4": f.get("X86_V4", False),
                  "torch": torch.backends.cpu.get_cpu_capability()}))
"""


def test_pinned_processes_run_at_avx2_and_say_nothing_on_stderr():
    """The whole point on this CPU: every library below AVX-512, and no library line on stderr (a stage's one-line
    error stays one line)."""
    done = subprocess.run([sys.executable, "-c", _EFFECT], cwd=ROOT, env=bare_env(), capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["np_v3"] and not seen["np_v4"] and seen["torch"] in {"AVX2", "DEFAULT"}
    dispatched = seen["cv"].split()
    assert not any(f.startswith("*AVX512") and not f.endswith("?") for f in dispatched), seen["cv"]


def test_the_probe_is_cached_per_machine(tmp_path):
    first = host_features(tmp_path)
    (cached,) = tmp_path.glob("*.json")
    assert HostFeatures.from_json(json.loads(cached.read_text())) == first
    planted = HostFeatures(opencv=("AVX512F",), numpy_dispatch=("X86_V3",), numpy_have=frozenset({"X86_V3"}))
    cached.write_text(json.dumps(planted.to_json()))
    assert host_features(tmp_path) == planted  # read back, not probed again
    cached.write_text("{not json")
    assert host_features(tmp_path) == first  # a damaged cache is probed again


def test_a_cpu_probe_that_fails_is_one_line(tmp_path, monkeypatch):
    broken = tmp_path / "numpy"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('this numpy is broken')\n")
    env = bare_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", "import stages"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: pipeline.kernels: probing the CPU in a child process failed: RuntimeError: this numpy is broken"]
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    with pytest.raises(KernelProbeError, match="this numpy is broken"):
        probe_host()


def test_kernels_imports_nothing_heavy():
    code = "import sys, pipeline.kernels; print(sorted({'numpy', 'cv2', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=bare_env(), capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# --- model runtimes: exact (CPU-independent) kernels, checked against the runtimes' own ------------------------------

def _model(key: str) -> Path:
    from pipeline.models_store import ModelUnavailable, model_path

    try:
        return model_path(key)
    except ModelUnavailable as err:
        pytest.skip(str(err))


def test_model_determinism_comes_from_params_or_the_environment(monkeypatch):
    monkeypatch.delenv(DETERMINISM_ENV, raising=False)
    assert model_determinism() == "exact"  # the project's default
    monkeypatch.setenv(DETERMINISM_ENV, "fast")
    assert model_determinism() == "fast"
    assert kernel_level(pin_env(AVX512), AVX512)["models"] == "fast"  # manifests and the run cache's key say so
    monkeypatch.setenv(DETERMINISM_ENV, "quick")
    with pytest.raises(ValueError, match=r"^\$WFLWV_DETERMINISM: 'quick' is not one of \['exact', 'fast'\]$"):
        model_determinism()


def test_litert_reference_kernels_repeat_bit_for_bit_at_any_thread_count(monkeypatch):
    np = pytest.importorskip("numpy")
    path = _model("mediapipe_face_mesh_v2")
    x = np.random.default_rng(0).random((1, 192, 192, 3), dtype=np.float32)

    def outputs(mode: str, threads: int):
        monkeypatch.setenv(DETERMINISM_ENV, mode)
        interp = litert_interpreter(path, threads)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return [interp.get_tensor(o["index"]).copy() for o in interp.get_output_details()]

    exact = outputs("exact", 1)
    for again in (outputs("exact", 1), outputs("exact", 2)):
        assert all(np.array_equal(a, b) for a, b in zip(exact, again))
    fast = outputs("fast", 1)  # XNNPACK: within 1e-3 of the reference kernels (192-px input units: pixels)
    assert max(float(np.abs(a - b).max()) for a, b in zip(exact, fast)) < 1e-3


def test_the_exact_litert_path_says_nothing_on_stderr():
    code = ("import stages\nfrom pipeline.kernels import litert_interpreter\nfrom pipeline.models_store import "
            "model_path\nlitert_interpreter(model_path('blazeface_short')).allocate_tensors()")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=bare_env(**{DETERMINISM_ENV: "exact"}),
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stderr == ""  # XNNPACK announces itself on stderr; the reference kernels do not


def _retinaface_input():
    import numpy as np

    from pipeline.demo.media import source_photos
    from pipeline.faces.detectors.base import downscale

    image, _ = downscale(source_photos()["t1"], 640)
    h, w = image.shape[:2]
    blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    blob[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1) - np.array([104, 117, 123], np.float32)[:, None, None]
    return blob


def test_onnx_graphs_in_cv2_dnn_match_onnxruntime_and_keep_their_weights():
    """The exact path runs the published graph: its shape arithmetic folded, not one float tensor changed; outputs
    within 1e-4 of onnxruntime's (RetinaFace's box offsets and logits are O(1))."""
    import cv2
    import numpy as np
    import onnx
    import onnxruntime as ort

    from pipeline.faces.detectors.retinaface import read_bytes_literal
    from pipeline.kernels import _float_tensors

    graph = read_bytes_literal(_model("retinaface_mnet_py"), "WEIGHTS")
    blob = _retinaface_input()
    exact = ExactOnnx(graph)
    static = onnx.load_from_string(exact.static_graph({"input": blob.shape}))
    assert not [n for n in static.graph.node if n.op_type == "Shape"]
    assert _float_tensors(static) == _float_tensors(onnx.load_from_string(graph))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    reference = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]).run(None, {"input": blob})
    threads = cv2.getNumThreads()
    try:
        runs = []
        for n in (1, 2):
            cv2.setNumThreads(n)
            runs.append(exact.run(None, {"input": blob}))
    finally:
        cv2.setNumThreads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))  # the same bits at any thread count
    assert [a.shape for a in runs[0]] == [r.shape for r in reference]
    assert max(float(np.abs(a - r).max()) for a, r in zip(runs[0], reference)) < 1e-4


def test_exact_and_fast_detectors_and_landmarks_agree_within_the_stated_tolerance(monkeypatch, astronaut):
    import numpy as np

    from pipeline.faces.detectors.registry import create_detector
    from pipeline.landmarks.adapters import create_landmark_model

    _model("retinaface_mnet_py"), _model("centerface"), _model("peppa_slim_160")
    runs = {}
    for mode in ("fast", "exact"):
        monkeypatch.setenv(DETERMINISM_ENV, mode)
        faces = {name: create_detector(name, max_side=640).detect(astronaut) for name in ("retinaface", "centerface")}
        box = faces["retinaface"].boxes[0]
        runs[mode] = faces, create_landmark_model("peppa_slim_160").predict(astronaut, box)[0]
    (fast_faces, fast_points), (exact_faces, exact_points) = runs["fast"], runs["exact"]
    for name, found in fast_faces.items():
        assert len(found.boxes) == len(exact_faces[name].boxes) >= 1
        assert np.abs(found.boxes - exact_faces[name].boxes).max() < 0.01, name  # px
    assert np.abs(fast_points - exact_points).max() < 0.01
