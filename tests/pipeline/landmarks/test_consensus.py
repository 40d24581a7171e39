import numpy as np
import pytest

from pipeline.landmarks.calibration import fit_offsets, fit_weights
from pipeline.landmarks.consensus import (
    ConsensusModel,
    consensus,
    disagreement,
    family_points,
    robust_consensus,
)
from pipeline.landmarks.schemes import REGIONS, to_wflw98


def face(rng, n_frames=1, iod=60.0):
    """Plausible-enough WFLW-98 shapes: random points around a face with outer eye corners ``iod`` apart."""
    base = rng.uniform([-40, -30], [40, 60], (98, 2))
    base[60], base[72] = [-iod / 2, 0], [iod / 2, 0]
    shift = rng.uniform(150, 250, (n_frames, 1, 2))
    return base[None] + shift


def nme(pred, truth):
    iod = np.linalg.norm(truth[:, 72] - truth[:, 60], axis=-1)
    return float((np.linalg.norm(pred - truth, axis=-1).mean(-1) / iod).mean())


def test_plain_consensus_gives_each_family_one_vote():
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


def test_family_points_average_models_of_one_family_first():
    pts = np.full((1, 3, 98, 2), np.nan)
    pts[0, 0], pts[0, 1], pts[0, 2] = 0.0, 2.0, 10.0
    pts[0, 1, :5] = np.nan  # the second mesh misses some points: the first one's stand alone there
    fam, names = family_points(pts, ["mesh", "mesh", "dlib"])
    assert names == ["mesh", "dlib"] and fam.shape == (1, 2, 98, 2)
    assert np.allclose(fam[0, 0, 5:], 1.0) and np.allclose(fam[0, 0, :5], 0.0) and np.allclose(fam[0, 1], 10.0)


def test_a_family_far_off_is_voted_down():
    rng = np.random.default_rng(0)
    truth = face(rng, 4)
    good = [truth + rng.normal(0, 0.6, truth.shape) for _ in range(3)]
    lost = truth + [25.0, 18.0]  # one family tracked something else: off by ~0.5 inter-ocular everywhere
    fams = np.stack(good + [lost], axis=1)
    out = robust_consensus(fams, ["a", "b", "c", "lost"])
    plain = fams.mean(axis=1)
    assert nme(out.points, truth) < 0.02 < nme(plain, truth)
    assert (out.residual[:, 3] > 0.3).all() and (out.residual[:, :3] < 0.05).all()
    assert (out.support == 3).all() and (out.families == 4).all()


def test_a_wrong_family_is_voted_down_also_where_only_one_other_family_speaks():
    rng = np.random.default_rng(1)
    truth = face(rng, 3)
    good = truth + rng.normal(0, 0.5, truth.shape)
    lost = truth + [30.0, 0.0]
    five = np.full_like(truth, np.nan)
    for k in (96, 97, 54, 76, 82):  # two detector families agree with the good model on their 5 points
        five[:, k] = truth[:, k] + rng.normal(0, 0.5, (3, 2))
    fams = np.stack([good, lost, five, five + 0.3], axis=1)
    out = robust_consensus(fams, ["good", "lost", "det1", "det2"])
    # the contour has two voices (good, lost): the lost family's frame-level residual settles it
    assert nme(out.points, truth) < 0.03


def biased_families(rng, n_frames):
    """Truth and three families: two unbiased, one whose contour sits 0.2 IOD above the truth (a 3D mesh's jaw)."""
    truth = face(rng, n_frames)
    iod = 60.0
    bias = np.zeros((98, 2))
    bias[REGIONS["contour"], 1] = -0.2 * iod
    fams = np.stack([truth + rng.normal(0, 0.05 * iod, truth.shape),
                     truth + rng.normal(0, 0.05 * iod, truth.shape),
                     truth + bias + rng.normal(0, 0.03 * iod, truth.shape)], axis=1)
    return truth, fams


def test_consensus_beats_every_single_model_with_a_biased_family():
    rng = np.random.default_rng(2)
    names = ["dlib_ert", "faceapi_cnn", "mesh"]
    _, calib = biased_families(rng, 200)  # unlabelled frames: the offset needs no truth
    offsets = fit_offsets(calib, names, anchors=["dlib_ert", "faceapi_cnn"])
    assert offsets["mesh"][REGIONS["contour"], 1] == pytest.approx(-0.2, abs=0.02)
    assert np.abs(offsets["mesh"][REGIONS["nose"]]).max() < 0.02
    truth, fams = biased_families(rng, 100)
    singles = [nme(fams[:, k], truth) for k in range(3)]
    corrected = robust_consensus(fams, names, ConsensusModel(offsets=offsets))
    assert nme(corrected.points, truth) < min(singles)
    plain = robust_consensus(fams, names)
    assert nme(corrected.points, truth) < nme(plain.points, truth)


def test_fit_weights_prefer_the_less_noisy_family_per_region():
    rng = np.random.default_rng(3)
    truth = face(rng, 300)
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    sharp = truth + rng.normal(0, 1.0, truth.shape)
    sharp[:, REGIONS["mouth"]] += rng.normal(0, 6.0, (300, len(REGIONS["mouth"]), 2))
    weights = fit_weights(np.stack([noisy, sharp], axis=1), ["noisy", "sharp"], truth)
    mouth, eyes = list(REGIONS).index("mouth"), list(REGIONS).index("eyes")
    assert weights["sharp"][eyes] == 1.0 and weights["noisy"][eyes] < 0.3
    assert weights["noisy"][mouth] == 1.0 and weights["sharp"][mouth] < 0.5


def test_five_point_scheme_maps_eye_centres_to_the_pupils():
    pts = np.arange(10, dtype=np.float32).reshape(5, 2)
    wflw, mask = to_wflw98(pts, "five")
    assert mask.sum() == 5 and np.flatnonzero(mask).tolist() == [54, 76, 82, 96, 97]
    assert np.allclose(wflw[[96, 97, 54, 76, 82]], pts)
