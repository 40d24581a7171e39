import numpy as np
import pytest

from pipeline.manifest import read_table, write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.uncertainty import aggregate, bridge_gaps, select_subsets, smooth_shapes, video_labels, video_score

P = stage_params("score", PROJECT_PARAMS, n_hard=1, smooth_window=1)
NO_BRIDGE = stage_params("score", PROJECT_PARAMS, n_hard=1, smooth_window=1, bridge_max_gap=0)
FAMILIES = (("a", "fa", 0.0), ("b", "fb", 1.0), ("c", "fc", -1.0))


def shape():
    base = np.zeros((98, 2), np.float32)
    base[:, 0] = np.arange(98)
    base[:, 1] = 40 * np.sin(np.arange(98))
    base[60], base[72] = [30, 0], [70, 0]  # outer eye corners: inter-ocular 40 px in a 110 px box
    return base


def landmark_rows(video_id, spread, frames=6, families=FAMILIES, skip=()):
    out = []
    for f in range(frames):
        if f in skip:
            continue
        for model, family, sign in families:
            pts = shape() + [sign * spread, 0]
            out.append({"video_id": video_id, "frame": f, "model": model, "family": family, "scheme": "wflw98",
                        "points": pts, "wflw98": pts, "mask": np.ones(98, bool), "confidence": 0.9})
    return out


def face_rows(video_id, frames=6, invalid=()):
    rows = []
    for f in range(frames):
        ok = f not in invalid
        box = [-5.0, -45.0, 105.0, 55.0] if ok else [np.nan] * 4
        rows.append({"video_id": video_id, "frame": f, "track_id": 0, "detector": "d", "n_detections": int(ok),
                     "det_score": 0.9 if ok else None, "source": "detected" if ok else "none", "valid": ok,
                     "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]})
    return rows


def labels_of(tmp_path, landmarks, faces, params=P):
    write_rows(landmarks, "landmarks", tmp_path / "l.parquet")
    write_rows(faces, "faces", tmp_path / "f.parquet")
    return video_labels(read_table(tmp_path / "l.parquet", "landmarks"), params,
                        read_table(tmp_path / "f.parquet", "faces"))


def test_disagreement_orders_videos_and_selects_hard_and_easy(tmp_path):
    scores = []
    for vid, spread in (("calm", 0.5), ("wild", 6.0), ("mid", 2.0), ("still", 0.1)):
        labels = labels_of(tmp_path, landmark_rows(vid, spread), face_rows(vid))
        assert labels.points.shape == (6, 98, 2) and labels.valid.all() and (labels.n_models == 3).all()
        scores.append(video_score(vid, labels, P))
    # three families at -s, 0, +s along x: mean distance to the median (0) is 2s/3; inter-ocular 40
    assert scores[1]["disagreement"] == pytest.approx(2 * 6.0 / 3 / 40, rel=1e-4)
    assert scores[1]["uncertainty"] == pytest.approx(aggregate(scores[1], P))
    selected = {r["video_id"]: (r["rank"], r["subset"]) for r in select_subsets(scores, n_hard=1)}
    assert selected == {"wild": (1, "hard"), "mid": (2, None), "calm": (3, None), "still": (4, "easy")}


def test_invalid_boxes_and_missing_labels_are_flagged_not_dropped(tmp_path):
    labels = labels_of(tmp_path, landmark_rows("v", 0.5, skip=(2,)), face_rows("v", invalid=(2,)))
    assert labels.valid.tolist() == [True, True, False, True, True, True]
    assert np.isnan(labels.points[2]).all() and labels.n_models[2] == 0
    row = video_score("v", labels, P)
    assert row["status"] == "ok" and row["valid_share"] == pytest.approx(5 / 6)
    assert row["frame_valid"] == labels.valid.tolist() and len(row["frame_disagreement"]) == 6


def test_a_family_far_off_makes_the_frame_disagree_but_stay_valid(tmp_path):
    rows = landmark_rows("v", 0.3)
    for r in rows:
        if r["model"] == "c" and r["frame"] == 3:
            r["wflw98"] = r["wflw98"] + [0.0, 25.0]  # one family lost the face in frame 3
    labels = labels_of(tmp_path, rows, face_rows("v"))
    assert labels.valid.all() and labels.agreeing[3] == 2 and (np.delete(labels.agreeing, 3) == 3).all()
    assert np.abs(labels.raw[3] - shape()).max() < 0.5  # voted down
    assert labels.disagreement[3] > 3 * np.delete(labels.disagreement, 3).max()


def test_a_model_that_fails_its_self_checks_does_not_vote_and_raises_the_uncertainty(tmp_path):
    rows = landmark_rows("v", 0.3, families=(*FAMILIES, ("d", "fd", 0.0)))
    for r in rows:
        r["mirror_disagreement"], r["jitter_disagreement"] = 0.02, 0.01
        if r["model"] == "d" and r["frame"] == 2:
            r["wflw98"] = r["wflw98"] + [0.0, 8.0]  # off by 0.2 inter-ocular distances ...
            r["mirror_disagreement"] = 0.4  # ... and it changes its mind on the mirrored face: no vote
    labels = labels_of(tmp_path, rows, face_rows("v"))
    assert labels.excluded.tolist() == [0, 0, 1, 0, 0, 0]
    assert labels.n_models[2] == 4 and labels.agreeing[2] == 3  # it labelled the frame, three families voted
    assert np.abs(labels.raw[2] - shape()).max() < 1e-4  # no pull at all, not just voted down
    assert np.isclose(labels.self_disagreement[2], 0.02) and np.isclose(labels.self_disagreement[0], 0.02)
    # the same rows without the failing check: the model votes and pulls the consensus
    for r in rows:
        r["mirror_disagreement"] = 0.02
    voted = labels_of(tmp_path, rows, face_rows("v"))
    assert voted.excluded.sum() == 0 and np.abs(voted.raw[2] - shape()).max() > 1e-3
    row = video_score("v", labels, P)
    assert np.isclose(row["self_disagreement"], 0.02) and len(row["frame_self_disagreement"]) == 6
    assert row["uncertainty"] > video_score("v", labels, stage_params(
        "score", PROJECT_PARAMS, n_hard=1, smooth_window=1, weights={"disagreement": 1.0, "instability": 1.0}))[
        "uncertainty"]


def test_two_families_agreeing_on_different_halves_is_not_a_valid_frame(tmp_path):
    # frame 3: family a is right on points 0..59 only, b on 38..97 only, c nowhere. Each of a and b agrees with the
    # consensus by its median distance, but only points 38..59 are backed by two families: no majority drew this shape
    rows = landmark_rows("v", 0.0)
    for r in rows:
        if r["frame"] != 3:
            continue
        pts = r["wflw98"].copy()
        if r["model"] == "a":
            pts[60:] += [0.0, 20.0]
        elif r["model"] == "b":
            pts[:38] += [0.0, -20.0]
        else:
            pts += [25.0, 0.0]
        r["wflw98"] = pts
    labels = labels_of(tmp_path, rows, face_rows("v"), NO_BRIDGE)
    assert labels.agreeing[3] == 2  # the frame-level rule alone would keep it
    assert labels.point_agreement[3] == pytest.approx(22 / 98)
    assert labels.valid.tolist() == [True, True, True, False, True, True]
    # with bridging, the frame takes the labels of its valid neighbours carried by the box, not the broken consensus
    bridged = labels_of(tmp_path, rows, face_rows("v"))
    assert bridged.bridged.tolist() == [False, False, False, True, False, False] and bridged.valid.all()
    assert np.abs(bridged.points[3] - shape()).max() < 1e-4 and np.isnan(bridged.instability[3])
    assert np.allclose(np.delete(labels.point_agreement, 3), 1.0)
    lenient = labels_of(tmp_path, rows, face_rows("v"), stage_params("score", PROJECT_PARAMS, n_hard=1,
                                                                       smooth_window=1, min_point_agreement=0.2,
                                                                       bridge_max_gap=0))
    assert lenient.valid.all()


def test_a_video_without_valid_frames_gets_a_status_not_hard(tmp_path):
    write_rows([], "landmarks", tmp_path / "l.parquet")
    write_rows(face_rows("gone", invalid=range(6)), "faces", tmp_path / "f.parquet")
    labels = video_labels(read_table(tmp_path / "l.parquet", "landmarks"), P,
                          read_table(tmp_path / "f.parquet", "faces"))
    assert not labels.valid.any()
    gone = video_score("gone", labels, P)
    assert gone["status"] == "unlabelable" and "0 of 6 frames valid" in gone["error"]
    one = labels_of(tmp_path, landmark_rows("one", 0.5, families=FAMILIES[:1]), face_rows("one"))
    assert video_score("one", one, P)["status"] == "model_error"  # labelled, but by one family only
    half = labels_of(tmp_path, landmark_rows("half", 1.0, skip=(0, 1, 2, 3)), face_rows("half", invalid=range(4)))
    row = video_score("half", half, P)
    assert row["status"] == "unlabelable" and "2 of 6 frames valid" in row["error"]
    others = [{"video_id": f"v{i}", "status": "ok", "uncertainty": float(i)} for i in range(4)]
    ranked = select_subsets([gone, row, *others], n_hard=2)
    assert gone.get("subset") is None and row.get("subset") is None and "rank" not in row
    assert [r["subset"] for r in ranked[2:]] == ["easy", "easy", "hard", "hard"]


def test_selection_keeps_hard_and_easy_the_same_size_with_deterministic_ties():
    rows = [{"video_id": f"v{i}", "status": "ok", "uncertainty": float(i // 2)} for i in range(7)]
    first = select_subsets([dict(r) for r in rows], n_hard=500)
    again = select_subsets([dict(r) for r in reversed(rows)], n_hard=500)
    subsets = {r["video_id"]: r["subset"] for r in first}
    assert subsets == {r["video_id"]: r["subset"] for r in again}
    assert list(subsets.values()).count("hard") == list(subsets.values()).count("easy") == 3
    assert {v for v, s in subsets.items() if s == "hard"} == {"v6", "v4", "v5"} and subsets["v2"] is None
    # v4 and v5 tie at 2.0 (and v0, v1 at 0.0): the smaller id ranks first, whatever the input order
    rank = {r["video_id"]: r["rank"] for r in first}
    assert rank == {r["video_id"]: r["rank"] for r in again}
    assert (rank["v4"], rank["v5"], rank["v0"], rank["v1"]) == (2, 3, 6, 7)


def test_shape_smoothing_keeps_rigid_motion_and_removes_point_noise():
    rng = np.random.default_rng(0)
    n = 40
    t = np.arange(n)
    angle = np.radians(3 * np.sin(t / 4))
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    jitter = rng.normal(0, 2.0, (n, 1, 2))  # a shaking camera: rigid, frame to frame, and true
    truth = np.einsum("fij,pj->fpi", rot, shape() - 50) + 200 + jitter
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    use = np.ones(n, bool)
    use[20] = False  # an invalid frame splits the runs and is left as it is
    smoothed = smooth_shapes(noisy.astype(np.float32), use, 9, 2)
    err = lambda x: np.linalg.norm(x - truth, axis=-1).mean(axis=-1)  # noqa: E731
    assert err(smoothed)[use].mean() < 0.6 * err(noisy)[use].mean()
    assert np.array_equal(smoothed[20], noisy[20].astype(np.float32))


def test_bridging_carries_labels_with_the_box_only_across_short_inner_gaps():
    frames = 12
    boxes = np.array([[10.0 + 2 * f, 20.0, 60.0 + 4 * f, 70.0 + 2 * f] for f in range(frames)])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    points = np.stack([(shape() - 50) / 110 * side[f] + centre[f] for f in range(frames)])  # rides on the box
    valid = np.ones(frames, bool)
    valid[[0, 4, 5, 6]] = False  # a gap at the start (never bridged) and an inner gap of 3
    valid[9:11] = False  # an inner gap of 2 whose boxes are not all valid
    box_valid = np.ones(frames, bool)
    box_valid[10] = False
    out, bridged = bridge_gaps(points, valid, box_valid, boxes, max_gap=3)
    assert bridged.tolist() == [f in (4, 5, 6) for f in range(frames)]
    assert np.allclose(out[4:7], points[4:7], atol=1e-3)  # a face riding on its box is carried exactly
    assert np.array_equal(out[~bridged], points[~bridged].astype(np.float32))
    assert not bridge_gaps(points, valid, box_valid, boxes, max_gap=2)[1].any()
