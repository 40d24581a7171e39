"""The standalone evaluator (``python -m ldeq.evaluate``) against cases computed by hand.

The face: inter-ocular distance (points 60, 72) 80 px, landmark bounding box 200 × 50 px, so the face size
√(200 · 50) is 100 px and NMF's normaliser d = 100/256. Errors are chosen so every figure is a closed form.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ldeq.evaluate import evaluate_folder, longest_valid_run, main
from ldeq.metrics import nad, nmf

IOD, FACE = 80.0, 100.0
D = FACE / 256  # NMF's per-frame normaliser for this face


def face() -> np.ndarray:
    pts = np.zeros((98, 2))
    pts[:, 0] = np.linspace(100, 300, 98)
    pts[:, 1] = np.linspace(200, 250, 98)
    pts[60], pts[72] = [160, 220], [240, 220]
    return pts


def track(n: int, motion=(0.0, 0.0)) -> np.ndarray:
    """The face translated by ``motion`` px per frame (real head motion: the labels follow it)."""
    return np.stack([face() + t * np.asarray(motion) for t in range(n)])


def write_folder(root, videos: dict[str, tuple[str, np.ndarray, np.ndarray | None]]) -> None:
    """A WFLW-V folder in the official layout (+ valid/ where given)."""
    for sub in ("landmarks", "bboxes", "valid"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lists = {"hard": [], "easy": []}
    for vid, (subset, gt, valid) in videos.items():
        np.save(root / "landmarks" / f"{vid}.npy", gt.astype(np.float32))
        np.save(root / "bboxes" / f"{vid}.npy", np.tile([90.0, 150.0, 310.0, 300.0], (len(gt), 1)).astype(np.float32))
        if valid is not None:
            np.save(root / "valid" / f"{vid}.npy", np.asarray(valid, bool))
        lists[subset].append(vid)
    for subset, ids in lists.items():
        (root / f"{subset}_video_IDs.txt").write_text("".join(f"{v}\n" for v in ids))


@pytest.fixture
def case(tmp_path):
    ann, pred = tmp_path / "wflw_v", tmp_path / "pred"
    pred.mkdir()
    step = np.array([0.6, 0.8])  # 1 px
    gts = {"calm": track(4), "jitter": track(4), "drift": track(6, motion=(10.0, 0.0)), "far": track(2)}
    preds = {
        "calm": gts["calm"] + [3.0, 4.0],  # 5 px everywhere, never moving
        "jitter": gts["jitter"] + np.array([(-1) ** t * np.array([3.0, 4.0]) for t in range(4)])[:, None],
        "drift": gts["drift"] + np.array([t * step for t in range(6)])[:, None],  # 0, 1, 2, ... px
        "far": gts["far"] + [6.0, 8.0],  # 10 px: 12.5 % of the inter-ocular distance, a failure
    }
    preds["drift"][0] = np.nan  # an invalid frame: never evaluated, so it may hold anything
    write_folder(ann, {"calm": ("hard", gts["calm"], None), "jitter": ("hard", gts["jitter"], None),
                       "drift": ("easy", gts["drift"], [False, True, True, True, False, True]),
                       "far": ("easy", gts["far"], None)})
    for vid, p in preds.items():
        np.save(pred / f"{vid}.npy", p.astype(np.float32))
    return ann, pred


def test_every_figure_matches_the_hand_computation(case):
    ann, pred = case
    out = evaluate_folder(pred, ann)
    hard, easy = out["subsets"]["hard"], out["subsets"]["easy"]
    # hard: 5 px errors → 6.25 % inter-ocular, 5 % face size; jitter flips ±(3, 4): 10 px steps → F = 100·10/d
    assert (hard["videos"], hard["frames"], hard["unscored"]) == (2, 8, 0)
    assert hard["nme_io"] == pytest.approx(100 * 5 / IOD, rel=1e-6)
    assert hard["nme_face"] == pytest.approx(100 * 5 / FACE, rel=1e-6)
    assert hard["nmf"] == pytest.approx((0 + 100 * 10 / D) / 2, rel=1e-6)
    assert hard["fr10"] == 0.0
    assert hard["auc10"] == pytest.approx(100 * (0.1 - 0.0625) / 0.1, abs=0.1)  # Simpson on a step: within 0.1 points
    # NAD(1) = NMF/√2 for each video; NAD(2) of the jitter is 0: pairs of ±e average to nothing
    assert hard["nad"] == [{"tau": 1, "nad": pytest.approx((0 + 100 * 10 / D / math.sqrt(2)) / 2, rel=1e-6),
                            "videos": 2}, {"tau": 2, "nad": pytest.approx(0.0, abs=1e-9), "videos": 2}]
    # easy: drift is evaluated on its longest valid run, frames 1..3 (errors 1, 2, 3 px; the head moves 10 px a
    # frame, which does not count); far has 10 px errors on 2 frames
    rows = {r["video_id"]: r for r in out["videos"]}
    assert (rows["drift"]["start"], rows["drift"]["frames"]) == (1, 3)
    assert rows["drift"]["nme_io"] == pytest.approx(100 * 2 / IOD, rel=1e-6)
    assert rows["drift"]["nmf"] == pytest.approx(100 * 1 / D, rel=1e-6)
    assert rows["drift"]["nad"] == {"1": pytest.approx(100 / D / math.sqrt(2), rel=1e-6)}  # 3 frames: no τ = 2
    assert easy["nme_io"] == pytest.approx((100 * 2 / IOD + 100 * 10 / IOD) / 2, rel=1e-6)
    assert easy["nme_face"] == pytest.approx((2.0 + 10.0) / 2, rel=1e-6)
    assert easy["nmf"] == pytest.approx(100 / D / 2, rel=1e-6)
    assert easy["fr10"] == pytest.approx(40.0)  # 2 of the 5 frames fail
    # CED: 0.2 from 1.25 %, 0.4 from 2.5 %, 0.6 from 3.75 % to 10 %: area 0.045 of 0.1
    assert easy["auc10"] == pytest.approx(45.0, abs=0.1)
    assert easy["nad"] == [{"tau": 1, "nad": pytest.approx(100 / D / math.sqrt(2) / 2, rel=1e-6), "videos": 2}]


def test_nad_is_nmf_over_root_two_and_falls_as_white_jitter_averages():
    gt = track(64)
    rng = np.random.default_rng(0)
    pred = gt + rng.normal(0, 1.0, gt.shape)
    curve = nad(pred, gt, [1, 2, 4, 8, 16, 32, 64])
    assert curve[0] == pytest.approx(nmf(pred, gt) / math.sqrt(2), rel=1e-12)  # constant face size: exact
    assert np.isnan(curve[-1])  # 64 frames hold no two means of 64
    assert curve[3] / curve[0] == pytest.approx(1 / math.sqrt(8), rel=0.2)  # white noise: 1/√τ
    drift = gt + np.arange(64)[:, None, None] * [0.1, 0.0]  # a slow walk: the deviation grows with τ
    walk = nad(drift, gt, [1, 4, 16])
    assert walk[0] < walk[1] < walk[2]


def test_longest_valid_run():
    assert longest_valid_run(np.array([1, 1, 0, 1, 1, 1, 0], bool)) == (3, 6)
    assert longest_valid_run(np.zeros(3, bool)) == (0, 0)


def test_command_line_prints_and_writes(case, capsys):
    ann, pred = case
    assert main(["--predictions", str(pred), "--annotations", str(ann)]) == 0
    printed = capsys.readouterr().out
    written = json.loads((pred / "evaluation.json").read_text())
    assert written["subsets"] == json.loads(json.dumps(evaluate_folder(pred, ann)["subsets"]))
    assert "hard" in printed and "NAD(τ) hard: τ=1:" in printed and "6.25" in printed


@pytest.mark.parametrize("spoil, message", [
    (lambda ann, pred: np.save(pred / "calm.npy", np.zeros((4, 68, 2))), "calm.npy: shape (4, 68, 2), expected (4, "
                                                                         "98, 2)"),
    (lambda ann, pred: np.save(pred / "calm.npy", np.zeros((5, 98, 2))), "calm.npy: shape (5, 98, 2), expected (4, "
                                                                         "98, 2)"),
    (lambda ann, pred: (pred / "jitter.npy").unlink(), "no prediction for 1 of the 4 listed videos (jitter)"),
    (lambda ann, pred: np.save(pred / "drift.npy", np.full((6, 98, 2), np.nan)),
     "drift.npy: frame 1 is not 98 finite points, but it is a valid frame"),
    (lambda ann, pred: (ann / "easy_video_IDs.txt").unlink(), "easy_video_IDs.txt: split list not found"),
    (lambda ann, pred: (ann / "bboxes" / "far.npy").unlink(), "far.npy: bboxes file not found"),
    (lambda ann, pred: (pred / "far.npy").write_bytes(b"not numpy"), "far.npy: not a readable .npy array"),
])
def test_bad_input_is_one_error_line(case, capsys, spoil, message):
    ann, pred = case
    spoil(ann, pred)
    assert main(["--predictions", str(pred), "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
