"""The Peppa slim_160 68-point CNN: published on GitHub only, loaded through the mirror, its graph fixed in memory.

The weights are not on any package registry. These tests use the project's mirror folder (``models.mirror`` in
params.yaml, or ``$WFLWV_MODEL_MIRROR``) and skip, saying why, where it does not hold the file.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from pipeline import cluster, models_store
from pipeline.landmarks.adapters import BoxMap, CropConvention, constant_folding_session, create_landmark_model
from pipeline.landmarks.label import available_models
from pipeline.landmarks.schemes import to_wflw98
from pipeline.models_store import MODEL_FILES, ModelUnavailable, model_path

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box
SPEC = MODEL_FILES["peppa_slim_160"]


@pytest.fixture(scope="module")
def mirror() -> Path:
    folder = models_store.mirror_dir()
    if folder is None:
        pytest.skip("no model mirror configured (models.mirror in params.yaml or $WFLWV_MODEL_MIRROR)")
    if not (folder / SPEC.key / Path(SPEC.member).name).is_file():
        pytest.skip(f"the model mirror {folder} does not hold {SPEC.key}/{Path(SPEC.member).name}")
    return folder


@pytest.fixture
def mirror_only(mirror, tmp_path, monkeypatch) -> Path:
    """An empty model cache: the file can only come from the mirror."""
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(models_store.MIRROR_ENV, str(mirror))
    return mirror


@pytest.fixture(scope="module")
def dlib_points(astronaut):
    return create_landmark_model("dlib_68").predict(astronaut, ASTRONAUT_BOX)[0]


def _forget_loaded(monkeypatch) -> None:
    """Adapters built by earlier tests in this process would hide what the store finds now."""
    for key in [k for k in cluster._LOCAL_CACHE if k[0].startswith("landmarks:peppa_slim_160")]:
        monkeypatch.delitem(cluster._LOCAL_CACHE, key)


def test_loaded_through_the_mirror_agrees_with_dlib(mirror_only, astronaut, dlib_points):
    assert model_path("peppa_slim_160").parent == mirror_only / "peppa_slim_160"  # used in place, verified
    model = create_landmark_model("peppa_slim_160")
    assert (model.family, model.scheme) == ("peppa_cnn", "ibug68")
    points, confidence = model.predict(astronaut, ASTRONAUT_BOX)
    assert points.shape == (68, 2) and confidence is None
    outer_eyes = np.linalg.norm(dlib_points[36] - dlib_points[45])
    assert np.linalg.norm(points - dlib_points, axis=1).mean() / outer_eyes < 0.06
    wflw, mask = to_wflw98(points, model.scheme)  # the existing 68-point scheme maps it
    assert mask.sum() == 90 and np.isfinite(wflw[mask]).all()


def test_graph_fix_keeps_the_outputs(mirror_only, astronaut):
    import onnx
    import onnxruntime as ort

    path = model_path("peppa_slim_160")
    assert len(onnx.load(str(path)).graph.input) == 153  # the input and its 152 weights, as published
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about every weight listed as an input: the slow graph
    shipped = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fixed = constant_folding_session(path)
    crop = astronaut[60:220, 140:300, ::-1].astype(np.float32)  # a real face, BGR, 160×160
    blob = np.ascontiguousarray(((crop - 127) / 127).transpose(2, 0, 1))[None]
    name = fixed.get_inputs()[0].name
    a, b = shipped.run(None, {name: blob})[0], fixed.run(None, {name: blob})[0]
    assert a.shape == b.shape == (1, 143)
    assert np.abs(a - b).max() < 1e-4


def test_fetch_copies_from_the_mirror_into_the_cache(mirror_only, tmp_path):
    models_store._fetch_github(SPEC.requirement, [SPEC])
    cached = tmp_path / "cache" / models_store._cached_file(SPEC).relative_to(models_store.cache_dir())
    assert cached.is_file() and models_store.sha256_file(cached) == SPEC.sha256
    assert model_path("peppa_slim_160") == cached  # the cache is used first once it holds the file


def test_a_corrupt_mirror_copy_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "mirror" / SPEC.key / Path(SPEC.member).name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * SPEC.size)  # right size, wrong bytes
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(models_store.MIRROR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        model_path("peppa_slim_160")


def test_neither_mirror_nor_repository_reachable_is_one_line_and_labelling_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(models_store.MIRROR_ENV, str(tmp_path / "no_mirror"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(ModelUnavailable) as caught:
        models_store._fetch_github(SPEC.requirement, [SPEC])
    assert "\n" not in str(caught.value) and "raw.githubusercontent.com" in str(caught.value)
    assert not list((tmp_path / "cache").rglob("*.onnx*"))  # no partial file left behind
    with pytest.raises(ModelUnavailable) as caught:
        model_path("peppa_slim_160")
    message = str(caught.value)
    assert "\n" not in message and "not in the mirror" in message and SPEC.requirement.split("@")[1] in message
    _forget_loaded(monkeypatch)
    ok, missing = available_models(["dlib_68", "peppa_slim_160"])
    assert ok == ["dlib_68"] and "\n" not in missing["peppa_slim_160"]


def test_second_pass_follows_a_tilted_face(mirror_only, astronaut):
    import cv2

    upright, _ = create_landmark_model("peppa_slim_160", "refined").predict(astronaut, ASTRONAUT_BOX)
    centre = (float(ASTRONAUT_BOX[0] + ASTRONAUT_BOX[2]) / 2, float(ASTRONAUT_BOX[1] + ASTRONAUT_BOX[3]) / 2)
    tilt = cv2.getRotationMatrix2D(centre, 30, 1.0)
    tilted = cv2.warpAffine(astronaut, tilt, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    expected = upright @ tilt[:, :2].T + tilt[:, 2]
    got, _ = create_landmark_model("peppa_slim_160", "refined").predict(tilted, ASTRONAUT_BOX)
    # the second pass cuts its crop upright along the first pass's eye line: the same face, the same points
    assert np.linalg.norm(got - expected, axis=1).mean() / np.linalg.norm(expected[36] - expected[45]) < 0.03


def test_box_from_points_is_the_upright_bounding_box():
    model = create_landmark_model("dlib_68", "refined")
    square = np.array([[0, 0], [10, 0], [10, 20], [0, 20]], np.float64)  # 10 wide, 20 high, upright
    turn = np.deg2rad(30)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    tilted = (square - [5, 10]) @ rot.T + [100, 50]
    model.convention = CropConvention(from_points=BoxMap(0.0, 0.1, 1.2, 1.0))
    box = model._box_from_points(tilted, 30.0)
    assert np.allclose(box[2:] - box[:2], [12, 20], atol=1e-4)  # sides measured upright, then scaled
    shift = np.array([0.0, 2.0]) @ rot.T  # 0.1 × height downwards in the face's frame
    assert np.allclose((box[:2] + box[2:]) / 2, np.array([100, 50]) + shift, atol=1e-4)
