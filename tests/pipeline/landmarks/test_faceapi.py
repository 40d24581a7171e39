"""face-api.js's 68-point CNNs (npm @vladmandic/face-api) ported to torch: real weights on a real face."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline import cluster, models_store
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.landmarks.faceapi import load_tfjs_weights
from pipeline.landmarks.label import available_models
from pipeline.landmarks.schemes import to_wflw98
from pipeline.models_store import ModelUnavailable, model_path

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box
FACEAPI = ("faceapi_68", "faceapi_68_tiny")


@pytest.fixture(scope="module")
def dlib_points(astronaut):
    return create_landmark_model("dlib_68").predict(astronaut, ASTRONAUT_BOX)[0]


@pytest.fixture(scope="module")
def mesh_points(astronaut):
    return create_landmark_model("mediapipe_mesh_v2").predict(astronaut, ASTRONAUT_BOX)[0]


@pytest.mark.parametrize("name", FACEAPI)
def test_port_agrees_with_dlib_on_a_real_face(astronaut, dlib_points, mesh_points, name):
    model = create_landmark_model(name)
    assert (model.family, model.scheme) == ("faceapi_cnn", "ibug68")
    points, confidence = model.predict(astronaut, ASTRONAUT_BOX)
    assert points.shape == (68, 2) and confidence is None
    outer_eyes = np.linalg.norm(dlib_points[36] - dlib_points[45])
    nme = np.linalg.norm(points - dlib_points, axis=1).mean() / outer_eyes
    assert nme < 0.08, nme
    # Eye centres sit on the eyes: close to both other families' eye centres (dlib ERT and the MediaPipe mesh).
    mesh_eyes = create_landmark_model("mediapipe_mesh_v2").eyes
    for eye, mesh_eye in zip(model.eyes, mesh_eyes):
        centre = points[list(eye)].mean(axis=0)
        assert np.linalg.norm(centre - dlib_points[list(eye)].mean(axis=0)) / outer_eyes < 0.08
        assert np.linalg.norm(centre - mesh_points[list(mesh_eye)].mean(axis=0)) / outer_eyes < 0.08
    # The iBUG-68 -> WFLW-98 map applies unchanged.
    wflw, mask = to_wflw98(points, model.scheme)
    assert mask.sum() == 90 and np.isfinite(wflw[mask]).all()


def test_full_and_tiny_are_different_networks_of_one_family(astronaut):
    full, tiny = (create_landmark_model(n) for n in FACEAPI)
    assert full.family == tiny.family and full.version != tiny.version
    assert len(full._net.blocks) == 4 and len(tiny._net.blocks) == 3
    a, b = full.predict(astronaut, ASTRONAUT_BOX)[0], tiny.predict(astronaut, ASTRONAUT_BOX)[0]
    gap = np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a[36] - a[45])
    assert 0.002 < gap < 0.08  # distinct weights, same face


def test_points_follow_the_face_when_it_moves(astronaut):
    model = create_landmark_model("faceapi_68")
    shift = np.float32([[1, 0, 23.0], [0, 1, -11.0]])
    moved = cv2.warpAffine(astronaut, shift, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    before = model.predict(astronaut, ASTRONAUT_BOX)[0]
    after = model.predict(moved, ASTRONAUT_BOX + np.float32([23, -11, 23, -11]))[0]
    assert np.abs((after - before).mean(axis=0) - [23, -11]).max() < 0.5  # crop and output mapping are consistent


def test_missing_weights_give_one_clear_line_and_labelling_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path))  # an empty cache: the weights really are missing
    with pytest.raises(ModelUnavailable) as caught:
        create_landmark_model("faceapi_68")
    message = str(caught.value)
    assert "\n" not in message
    assert "'faceapi_68'" in message and "does not exist" in message and "models_store fetch" in message
    for name in FACEAPI:  # adapters built by earlier tests in this process would hide the missing files
        monkeypatch.delitem(cluster._LOCAL_CACHE, f"landmarks:{name}", raising=False)
    ok, missing = available_models(["faceapi_68", "dlib_68", "faceapi_68_tiny"])
    assert ok == ["dlib_68"]
    assert sorted(missing) == ["faceapi_68", "faceapi_68_tiny"] and "does not exist" in missing["faceapi_68_tiny"]


def test_truncated_weights_are_refused(tmp_path):
    manifest, shard = model_path("faceapi_68_tiny_manifest"), model_path("faceapi_68_tiny")
    short = tmp_path / shard.name
    short.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError, match="ends inside tensor"):
        load_tfjs_weights(manifest, short)
    with pytest.raises(ValueError, match="expects shards"):
        load_tfjs_weights(manifest, model_path("faceapi_68"))


def _tarball(path: Path, member: str, payload: bytes | None, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_npm_extraction_takes_only_verified_regular_files(tmp_path, monkeypatch):
    spec = models_store.MODEL_FILES["faceapi_68_tiny"]
    real = model_path(spec.key).read_bytes()
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path / "cache"))
    member = f"{models_store.NPM_ROOT}/{spec.member}"
    with tarfile.open(_tarball(tmp_path / "link.tgz", member, None, link="/etc/passwd")) as tar:
        with pytest.raises(ModelUnavailable, match="not a regular file"):
            models_store._extract_verified(tar, spec)
    tampered = bytearray(real)
    tampered[1000] ^= 0xFF
    with tarfile.open(_tarball(tmp_path / "bad.tgz", member, bytes(tampered))) as tar:
        with pytest.raises(ModelUnavailable, match="checksum mismatch"):
            models_store._extract_verified(tar, spec)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing unverified is left behind
    with tarfile.open(_tarball(tmp_path / "good.tgz", member, real)) as tar:
        models_store._extract_verified(tar, spec)
    assert model_path(spec.key).read_bytes() == real
