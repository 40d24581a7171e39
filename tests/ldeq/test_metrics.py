import numpy as np
import pytest

from ldeq.metrics import acceleration_error, ced, fr_auc, nme, nmf, video_nme


def face(scale: float = 1.0) -> np.ndarray:
    """98 points with outer eye corners 60 and 72 exactly 100·scale apart, landmark box 256·scale square."""
    pts = np.zeros((98, 2))
    pts[:, 0] = np.linspace(0, 256, 98) * scale
    pts[:, 1] = np.linspace(0, 256, 98) * scale
    pts[60] = [50 * scale, 100 * scale]
    pts[72] = [150 * scale, 100 * scale]
    return pts


def test_nme_hand_computed():
    gt = face()[None]
    pred = gt.copy()
    pred[0, 0] += [3, 4]  # one point off by 5 px; inter-ocular 100
    assert nme(pred, gt) == pytest.approx([5 / 98 / 100])


def test_nme_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        nme(np.zeros((2, 98, 2)), np.zeros((2, 68, 2)))


def test_ced_fr_auc():
    nmes = np.array([0.0, 0.05, 0.2, 0.2])
    xs, ys = ced(nmes)
    assert len(xs) == 1001 and ys[0] == 0.25 and ys[-1] == 0.5
    fr, auc = fr_auc(nmes)
    assert fr == pytest.approx(50.0)
    # CED is 0.25 below 0.05 and 0.5 from 0.05 to 0.1: area / 0.1 = 0.375
    assert auc == pytest.approx(37.5, abs=0.05)
    assert fr_auc(np.zeros(10)) == pytest.approx((0.0, 100.0))


def test_video_nme_is_percent_mean_over_frames():
    gt = np.stack([face(), face(2.0)])
    pred = gt + [1.0, 0.0]
    assert video_nme(pred, gt) == pytest.approx(100 * (1 / 100 + 1 / 200) / 2)


def test_nmf_hand_computed():
    gt = np.stack([face()] * 3)  # landmark box 256 × 256 → d_n = 1
    pred = gt.copy()
    pred[1] += [3.0, 4.0]  # error jumps by 5 px at frame 1 and back at frame 2
    assert nmf(pred, gt) == pytest.approx(100 * 5.0)
    assert nmf(gt + 7.0, gt) == 0.0  # a constant offset costs nothing
    moving = gt + np.arange(3)[:, None, None] * 10.0
    assert nmf(moving, moving) == 0.0  # true motion cancels


def test_nmf_uses_the_later_frames_scale():
    gt = np.stack([face(), face(0.5)])  # second frame: box 128 → d = 0.5
    pred = gt.copy()
    pred[1] += [1.0, 0.0]
    assert nmf(pred, gt) == pytest.approx(100 * 1.0 / 0.5)


def test_acceleration_error_zero_for_constant_velocity():
    gt = np.stack([face() + t for t in range(4)])
    assert acceleration_error(gt + 3.0, gt) == pytest.approx(0.0)
