import numpy as np
import pytest

from ldeq.wflw import FLIP_PERMUTATION, WFLW_TO_IBUG68
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.landmarks.consensus import consensus, disagreement
from pipeline.landmarks.label import available_models
from pipeline.landmarks.schemes import scheme_map, to_wflw98
from pipeline.models_store import ModelUnavailable

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box


@pytest.fixture(scope="module")
def predictions(astronaut):
    out = {}
    for name in ("dlib_68", "mediapipe_mesh_v2"):
        model = create_landmark_model(name)
        native, conf = model.predict(astronaut, ASTRONAUT_BOX)
        out[name] = (model, native, conf)
    return out


def test_native_shapes(predictions):
    assert predictions["dlib_68"][1].shape == (68, 2)
    assert predictions["mediapipe_mesh_v2"][1].shape == (468, 2)
    assert 0.5 < predictions["mediapipe_mesh_v2"][2] <= 1.0


def test_two_real_model_families_agree_on_the_astronaut(predictions):
    mapped = {n: to_wflw98(p[1], p[0].scheme)[0] for n, p in predictions.items()}
    a, b = mapped["dlib_68"], mapped["mediapipe_mesh_v2"]
    interocular = np.linalg.norm(a[60] - a[72])
    ibug = WFLW_TO_IBUG68
    # eye corners, nose tip, mouth corners (WFLW 60, 64, 68, 72, 54, 76, 82) agree closely
    for point in (60, 64, 68, 72, 54, 76, 82):
        assert np.linalg.norm(a[point] - b[point]) / interocular < 0.08, point
    shared = np.isfinite(a[:, 0]) & np.isfinite(b[:, 0])
    assert shared.sum() == 90 and np.all(np.isin(ibug, np.flatnonzero(shared)))
    assert np.nanmean(np.linalg.norm(a - b, axis=1)) / interocular < 0.1


def test_scheme_maps_are_consistent():
    ibug = scheme_map("ibug68")
    assert ibug.weights.shape == (98, 68) and ibug.mask.sum() == 90
    assert np.allclose(ibug.weights[ibug.mask].sum(axis=1), 1.0)  # every mapped point is an affine combination
    assert not ibug.mask[38:42].any() and not ibug.mask[47:51].any()  # lower brow edges: not in iBUG-68
    mesh = scheme_map("mesh468")
    assert mesh.mask.all() and np.allclose(mesh.weights.sum(axis=1), 1.0)
    identity = np.random.default_rng(0).random((98, 2)).astype(np.float32)
    assert np.allclose(to_wflw98(identity, "wflw98")[0], identity)
    with pytest.raises(ValueError, match="has 68 points"):
        to_wflw98(np.zeros((5, 2)), "ibug68")


def test_ibug_lift_roundtrips_shared_points():
    pts = np.random.default_rng(1).random((68, 2)).astype(np.float32)
    wflw, _ = to_wflw98(pts, "ibug68")
    assert np.allclose(wflw[WFLW_TO_IBUG68], pts)
    assert np.allclose(wflw[1], (pts[0] + pts[1]) / 2)


def test_flip_map_is_involution_and_mirrors_eyes():
    assert np.array_equal(FLIP_PERMUTATION[FLIP_PERMUTATION], np.arange(98))
    assert FLIP_PERMUTATION[60] == 72 and FLIP_PERMUTATION[96] == 97


def test_consensus_gives_each_family_one_vote():
    base = np.zeros((98, 2), np.float32)
    pts = np.stack([base, base + 2, base + 10])
    masks = np.ones((3, 98), bool)
    centre, votes = consensus(pts, masks, ["mesh", "mesh", "dlib"])
    assert np.allclose(centre, 5.5)  # mean(mean(0, 2), 10)
    assert (votes == 2).all()
    masks[2, :10] = False
    centre, votes = consensus(pts, masks, ["mesh", "mesh", "dlib"])
    assert np.allclose(centre[:10], 1.0) and (votes[:10] == 1).all()


def test_disagreement_is_normalised_by_interocular():
    a = np.zeros((98, 2), np.float32)
    a[72] = [100, 0]
    b = a + [2, 0]
    pts = np.stack([a, b])
    centre, votes = consensus(pts, np.ones((2, 98), bool), ["x", "y"])
    assert disagreement(pts, np.ones((2, 98), bool), centre, votes) == pytest.approx(1 / 100)


def test_unavailable_model_is_reported_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    ok, missing = available_models(["dlib_68", "insightface_2d106", "no_such_model"])
    assert ok == ["dlib_68"]
    assert "2d106det.onnx not found" in missing["insightface_2d106"]
    assert "unknown landmark model" in missing["no_such_model"]
    with pytest.raises(ModelUnavailable):
        create_landmark_model("insightface_2d106")


@pytest.mark.parametrize("name", ["dlib_68", "mediapipe_mesh_v2"])
def test_roll_correction_recovers_a_tilted_face(astronaut, name):
    import cv2

    model = create_landmark_model(name)
    upright, _ = model.predict(astronaut, ASTRONAUT_BOX)
    centre = ((ASTRONAUT_BOX[0] + ASTRONAUT_BOX[2]) / 2, (ASTRONAUT_BOX[1] + ASTRONAUT_BOX[3]) / 2)
    tilt = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), 25, 1.0)
    tilted = cv2.warpAffine(astronaut, tilt, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    expected = upright @ tilt[:, :2].T + tilt[:, 2]
    got, _ = model.predict(tilted, ASTRONAUT_BOX)
    single_pass, _ = model._predict(tilted, ASTRONAUT_BOX)
    iod = np.linalg.norm(expected[list(model.eyes[0])].mean(0) - expected[list(model.eyes[1])].mean(0))
    corrected = np.linalg.norm(got - expected, axis=1).mean() / iod
    assert corrected < 0.06
    assert corrected <= np.linalg.norm(single_pass - expected, axis=1).mean() / iod
