import cv2
import numpy as np

from ldeq.crop import crop_transform, from_crop, network_input, to_crop
from tests.ldeq.released_reference import released_crop_matrix, released_network_input, released_to_frame


def test_crop_transform_roundtrip_and_centre():
    affine = crop_transform(np.array([100, 50, 199, 149]), 256)
    centre = to_crop(np.array([[150.0, 100.0]]), affine)
    assert np.allclose(centre, [[256 / 2, 256 / 2]])
    pts = np.random.default_rng(0).random((98, 2)) * 300
    assert np.allclose(from_crop(to_crop(pts, affine), affine), pts)
    assert np.isclose(affine[0, 0], 256 / (1.2 * 99))


def test_crop_transform_is_the_released_get_transform_from_bbox():
    rng = np.random.default_rng(0)
    x1y1 = rng.uniform(-40, 500, (200, 2))
    boxes = np.concatenate([x1y1, x1y1 + rng.uniform(20, 300, (200, 2))], axis=1)
    boxes[:5] = [[10.5, 20.49, 110.5, 140.51], [-3.7, -0.6, 50.2, 60.0], [0, 0, 1, 1], [7, 7, 8, 300], [1, 2, 3, 4]]
    for box in boxes:
        # float32 point pairs in the released construction: agreement to ~1e-4 crop pixels at 256
        assert np.allclose(crop_transform(box, 256), released_crop_matrix(box, 1.2, 256), atol=2e-4), box


def test_network_input_is_the_released_preprocessing(astronaut):
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)  # the released script decodes frames with OpenCV
    box = np.array([170.3, 60.8, 290.1, 200.6])
    ours, affine = network_input(astronaut, box, 256)
    theirs, matrix = released_network_input(bgr, box, 256)
    assert ours.shape == (3, 256, 256) and ours.dtype == np.float32
    assert np.allclose(affine, matrix, atol=2e-4)
    assert np.allclose(ours, theirs.numpy(), atol=1e-5)
    pts = np.random.default_rng(0).uniform(0, 256, (98, 2))
    assert np.allclose(from_crop(pts, affine), released_to_frame(pts, matrix), atol=1e-3)
