"""Each landmark model fed the box it was trained on: measured box relations (conventions.json) and the second pass.

The face box the pipeline tracks comes from RetinaFace; dlib's ERT-68 was trained on its HOG detector's boxes, which
sit lower and are shorter. Fed RetinaFace's box as is, dlib starts its cascade from a misplaced mean shape.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.faces.detectors import create_detector
from pipeline.landmarks.adapters import CROP_MODES, LANDMARK_MODELS, create_landmark_model, load_conventions
from pipeline.landmarks.label import create_model


@pytest.fixture(scope="module")
def boxes(astronaut) -> dict[str, np.ndarray]:
    """The astronaut's face as the faces stage's detector and as dlib's own detector box it."""
    return {name: create_detector(name).detect(astronaut).boxes[0] for name in ("retinaface", "dlib_hog")}


@pytest.fixture(scope="module")
def dlib_on_its_own_box(astronaut, boxes) -> np.ndarray:
    return create_landmark_model("dlib_68").predict(astronaut, boxes["dlib_hog"])[0]


def _error(points: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(points - reference, axis=1).mean() / np.linalg.norm(reference[36] - reference[45]))


def test_conventions_cover_registered_models_with_valid_modes():
    conventions = load_conventions()
    assert {"dlib_68", "mediapipe_mesh_v2", "faceapi_68", "peppa_slim_160"} <= set(conventions)
    for name, convention in conventions.items():
        assert name in LANDMARK_MODELS and convention.label_crop in CROP_MODES
        for box_map in (convention.from_track, convention.from_points):
            assert 0.5 < box_map.sw < 2 and 0.5 < box_map.sh < 2 and abs(box_map.dx) < 0.5 and abs(box_map.dy) < 0.5


def test_measured_crop_gives_dlib_its_own_box(astronaut, boxes, dlib_on_its_own_box):
    tracked = boxes["retinaface"]
    given = create_landmark_model("dlib_68").predict(astronaut, tracked)[0]
    measured = create_landmark_model("dlib_68", "measured").predict(astronaut, tracked)[0]
    assert _error(measured, dlib_on_its_own_box) < _error(given, dlib_on_its_own_box) / 2


def test_second_pass_recovers_from_a_shifted_box(astronaut, boxes, dlib_on_its_own_box):
    tracked = boxes["retinaface"].copy()
    tracked[[0, 2]] += 0.15 * (tracked[2] - tracked[0])  # a box that lags the face by 15 % of its width
    given = create_landmark_model("dlib_68").predict(astronaut, tracked)[0]
    refined = create_landmark_model("dlib_68", "refined").predict(astronaut, tracked)[0]
    assert _error(refined, dlib_on_its_own_box) < _error(given, dlib_on_its_own_box) / 2


def test_label_stage_uses_the_stored_modes_and_the_follower_keeps_the_box():
    conventions = load_conventions()
    for name in ("dlib_68", "peppa_slim_160"):
        assert create_model(name).crop == conventions[name].label_crop  # the label stage's adapters
        assert create_landmark_model(name).crop == "given"  # everyone else's (the faces stage's follower)


def test_a_bad_mode_is_one_line_naming_file_and_model(tmp_path):
    path = tmp_path / "conventions.json"
    entry = {"from_track": {"dx": 0, "dy": 0, "sw": 1, "sh": 1}, "from_points": {"dx": 0, "dy": 0, "sw": 1, "sh": 1}}
    path.write_text(json.dumps({"models": {"dlib_68": {**entry, "label_crop": "twice"}}}))
    with pytest.raises(ValueError) as caught:
        load_conventions(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value) and "dlib_68" in str(caught.value)
