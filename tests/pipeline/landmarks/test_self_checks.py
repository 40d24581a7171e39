"""The label stage's truth-free self-checks (mirror, box jitter / warp) on real models and a real face photo."""

import numpy as np
import pytest

from ldeq.wflw import FLIP_PERMUTATION
from pipeline.landmarks.adapters import BoxMap, CropConvention
from pipeline.landmarks.label import SelfChecks, checked_label, create_model
from pipeline.landmarks.schemes import scheme_map

ASTRONAUT_BOX = np.array([179, 83, 266, 170], np.float32)  # dlib HOG's box
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def mirrored(rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = rgb.shape[1]
    return np.ascontiguousarray(rgb[:, ::-1]), np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]],
                                                        np.float32)


def unmirror(points: np.ndarray, width: int) -> np.ndarray:
    back = points.astype(np.float64).copy()
    back[:, 0] = width - 1 - back[:, 0]
    return back[FLIP_PERMUTATION]


@pytest.mark.parametrize("name", ["dlib_68", "peppa_slim_160", "retinaface_5"])
def test_mirror_tta_makes_a_model_exactly_mirror_equivariant(astronaut, name):
    model = create_model(name)
    smap = scheme_map(model.scheme)
    checks = SelfChecks(mirror=True, tta={"default": "mirror"})
    label = checked_label(model, smap, astronaut, ASTRONAUT_BOX, IDENTITY, checks)
    flipped, flipped_box = mirrored(astronaut, ASTRONAUT_BOX)
    label_of_mirror = checked_label(model, smap, flipped, flipped_box, IDENTITY, checks)
    assert label is not None and label_of_mirror is not None
    assert np.isfinite(label.mirror) and label.mirror > 0  # the model alone is not equivariant ...
    back = unmirror(label_of_mirror.wflw98, astronaut.shape[1])
    # ... its mirror-averaged label is (up to float rounding), and both passes see the same disagreement
    assert np.abs(back[smap.mask] - label.wflw98[smap.mask]).max() < 1e-3
    assert np.isclose(label.mirror, label_of_mirror.mirror, rtol=0.05)  # same distance, each in its own IOD


def test_a_horizontal_crop_offset_shows_in_the_mirror_check(astronaut):
    """dlib with the horizontal offsets once fitted on the demo (dx −0.085 from the tracked box, −0.11 from its own
    points) fails on one side of the mirror when the tracked box sits a little to the left; with the offsets pooled
    over mirror images (dx = 0, as the label stage uses them) it does not."""
    checks = SelfChecks(mirror=True)
    smap = scheme_map("ibug68")
    box = ASTRONAUT_BOX - np.array([8, 0, 8, 0], np.float32)
    pooled = create_model("dlib_68")
    offset = create_model("dlib_68")
    track, points = pooled.convention.from_track, pooled.convention.from_points
    assert abs(track.dx) < 0.01 and points.dx == 0.0 and points.dx_yaw > 0  # fitted on faces and their mirrors
    offset.convention = CropConvention(BoxMap(-0.0849, 0.0477, 1.0742, 0.8312),  # conventions.json at 93aafc0
                                       BoxMap(-0.1125, -0.1395, 1.0816, 1.1368), pooled.crop)
    with_offset = checked_label(offset, smap, astronaut, box, IDENTITY, checks).mirror
    without = checked_label(pooled, smap, astronaut, box, IDENTITY, checks).mirror
    assert with_offset > 0.1 > 0.03 > without


def test_jitter_check_is_zero_for_no_perturbation_and_grows_with_it(astronaut):
    model = create_model("mediapipe_mesh_v2")
    smap = scheme_map(model.scheme)
    none = checked_label(model, smap, astronaut, ASTRONAUT_BOX, IDENTITY,
                         SelfChecks(mirror=False, jitter_boxes=((0.0, 0.0, 1.0, 0.0),)))
    small = checked_label(model, smap, astronaut, ASTRONAUT_BOX, IDENTITY,
                          SelfChecks(mirror=False, jitter_boxes=((0.03, 0.03, 1.05, 5.0),)))
    large = checked_label(model, smap, astronaut, ASTRONAUT_BOX, IDENTITY,
                          SelfChecks(mirror=False, jitter_boxes=((0.3, 0.3, 1.6, 30.0),)))
    assert none.jitter == 0.0 and np.isnan(none.mirror)
    assert 0 < small.jitter < 0.1 < large.jitter
    # without TTA the label is the plain pass
    plain = checked_label(model, smap, astronaut, ASTRONAUT_BOX, IDENTITY, SelfChecks(mirror=False))
    assert np.array_equal(small.wflw98, plain.wflw98)


def test_yaw_flips_sign_in_the_mirror_and_the_yaw_signed_box_map_is_mirror_symmetric(astronaut):
    model = create_model("dlib_68")
    points, _ = model.predict(astronaut, ASTRONAUT_BOX)
    flipped, flipped_box = mirrored(astronaut, ASTRONAUT_BOX)
    mirror_points, _ = model.predict(flipped, flipped_box)
    yaw, mirror_yaw = model.yaw(points), model.yaw(mirror_points)
    assert abs(yaw) > 0.02 and np.sign(yaw) == -np.sign(mirror_yaw) and abs(yaw + mirror_yaw) < 0.5 * abs(yaw)
    box_map = BoxMap(0.0, -0.13, 1.08, 1.13, dx_yaw=0.43)
    width = astronaut.shape[1]
    there = box_map(ASTRONAUT_BOX, yaw)
    back = box_map(flipped_box, -yaw)
    assert np.allclose([width - 1 - back[2], back[1], width - 1 - back[0], back[3]], there, atol=1e-3)
