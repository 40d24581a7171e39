"""Tracking the main face: assignment linking, shot cuts, main-face rules, sources, no held boxes past max_gap,
zero-lag smoothing; and the faces stage on real video (rolled face, exit and re-entry, cut, no face, tiny face,
several faces, a missing model)."""

import cv2
import numpy as np
import pytest

from pipeline.faces.detectors import Detections
from pipeline.faces.process import track_main_face
from pipeline.faces.tracker import (
    fill_track,
    iou,
    link_tracks,
    main_face_tracks,
    main_track,
    shot_cuts,
    smooth_boxes,
)
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.video import VideoWriter


def dets(*boxes, score=1.0):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), score, np.float32))


def faces_params(**overrides):
    return stage_params("faces", PROJECT_PARAMS, **overrides)


def track_face(video_id, clip, params):
    """The faces stage's per-video work, followed by the project's landmark models (as the stage passes them)."""
    return track_main_face(video_id, clip, params, create_landmark_model)


def test_iou():
    assert iou(np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10])) == 1.0
    assert iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == 50 / 150


def test_assignment_keeps_two_crossing_faces_apart():
    # two faces moving towards each other: greedy best-IoU would swap them where they overlap; motion keeps them
    frames = [dets([10 + 12 * k, 0, 50 + 12 * k, 40], [130 - 12 * k, 0, 170 - 12 * k, 40]) for k in range(10)]
    tracks = link_tracks(frames, [], iou_threshold=0.3, max_gap=2, max_shift=0.6)
    assert len(tracks) == 2
    for track in tracks:
        xs = [b[0] for b in track.boxes]
        assert np.all(np.diff(xs) > 0) or np.all(np.diff(xs) < 0)  # each track keeps its own direction


def test_links_never_cross_a_shot_cut():
    face = [10, 10, 50, 50]
    frames = [dets(face) for _ in range(6)]
    assert len(link_tracks(frames, [], 0.3, 2, 0.6)) == 1
    assert [t.frames for t in link_tracks(frames, [3], 0.3, 2, 0.6)] == [[0, 1, 2], [3, 4, 5]]


def test_shot_cut_detection():
    a, b = np.full((24, 32), 40, np.uint8), np.full((24, 32), 200, np.uint8)
    drift = [np.clip(a.astype(int) + k, 0, 255).astype(np.uint8) for k in range(5)]  # lighting drift: no cut
    assert shot_cuts(drift + [b, b], threshold=40.0) == [5]


@pytest.mark.parametrize(("rule", "expected"), [("longest", "small"), ("largest", "big"), ("central", "centred")])
def test_main_face_rules(rule, expected):
    faces = {"small": ([0, 0, 20, 20], 8), "big": ([200, 140, 300, 240], 4), "centred": ([150, 110, 170, 130], 3)}
    frames = [dets(*[box for box, seen in faces.values() if k < seen]) for k in range(8)]
    tracks = link_tracks(frames, [], 0.3, 2, 0.6)
    assert len(tracks) == 3
    chosen = main_track(tracks, rule, 2, (320, 240))
    assert np.allclose(chosen.boxes[0], faces[expected][0])


def test_salient_rule_takes_the_framed_face_of_a_group_photo_not_the_one_missed_once_less():
    # a group photo: every face is there throughout; the detector misses each face but the small one at the edge once
    faces = {"edge": [0, 0, 24, 24], "framed": [130, 90, 190, 150], "side": [250, 100, 290, 140]}
    missed = {"framed": 4, "side": 6}
    frames = [dets(*[box for name, box in faces.items() if missed.get(name) != k]) for k in range(10)]
    tracks = link_tracks(frames, [], 0.3, 2, 0.6)
    assert np.allclose(main_track(tracks, "longest", 2, (320, 240)).boxes[0], faces["edge"])
    assert np.allclose(main_track(tracks, "salient", 2, (320, 240)).boxes[0], faces["framed"])
    # a large face that is there for a moment does not take the clip from one there throughout
    brief = [dets(faces["side"], *([[100, 60, 220, 180]] if k < 2 else [])) for k in range(10)]
    assert np.allclose(main_track(link_tracks(brief, [], 0.3, 2, 0.6), "salient", 2, (320, 240)).boxes[0],
                       faces["side"])


def test_no_box_is_held_or_followed_past_max_gap():
    face = [100, 100, 140, 140]
    # detected 0..4, absent 5..24 (longer than max_gap), detected again 25..29
    frames = [dets(face) if k < 5 or k >= 25 else dets() for k in range(30)]
    tracks = link_tracks(frames, [], 0.3, 3, 0.6)
    assert len(tracks) == 2
    track = main_face_tracks(tracks, main_track(tracks, "longest", 2, (320, 240)))
    face_track = fill_track(track, 30, [], max_gap=3)
    assert face_track.source[:5] == ["detected"] * 5 and face_track.source[25:] == ["detected"] * 5
    assert face_track.source[5:8] == ["held"] * 3 and face_track.source[22:25] == ["held"] * 3
    assert face_track.source[8:22] == ["none"] * 14
    assert np.isnan(face_track.boxes[8:22]).all() and not face_track.valid[5:25].any()


def test_short_gap_is_interpolated_and_landmarks_fill_where_they_can():
    frames = [dets([0, 0, 10, 10]), dets(), dets(), dets([30, 0, 40, 10])]
    track = main_track(link_tracks(frames, [], 0.0, 2, 5.0), "longest", 1, (64, 64))
    plain = fill_track(track, 4, [], max_gap=2)
    assert plain.source == ["detected", "interpolated", "interpolated", "detected"]
    assert np.allclose(plain.boxes[1], [10, 0, 20, 10])

    def step(frame, prior):  # a follower that knows the face at frame 1 only
        return np.array([12.0, 0, 22, 10]) if frame == 1 else None

    followed = fill_track(track, 4, [], max_gap=2, landmark_step=step)
    assert followed.source == ["detected", "landmarks", "interpolated", "detected"]
    assert np.allclose(followed.boxes[1], [12, 0, 22, 10]) and followed.valid.all()


def test_another_face_that_coexists_is_never_joined_to_the_main_face():
    main_box, other = [0, 0, 40, 40], [200, 200, 240, 240]
    frames = [dets(main_box, other) for _ in range(5)] + [dets() for _ in range(10)] + [dets(main_box)] * 5
    tracks = link_tracks(frames, [], 0.3, 2, 0.6)
    merged = main_face_tracks(tracks, main_track(tracks, "longest", 2, (320, 240)))
    assert all(np.allclose(b, main_box) for b in merged.boxes) and len(merged.frames) == 10


def test_smoothing_follows_a_fast_exit_without_cutting_the_corner():
    # still for 20 frames, then accelerating out at up to 40 px/frame: a plain Gaussian (σ 5) trails by > 25 px
    xs = np.r_[np.full(20, 100.0), 100 + np.cumsum(np.linspace(4, 40, 12))]
    frames = [dets([x, 0, x + 150, 150]) for x in xs]
    track = main_track(link_tracks(frames, [], 0.1, 2, 1.0), "longest", 1, (1280, 240))
    filled = fill_track(track, len(xs), [], 2)
    capped = smooth_boxes(filled, window=7, sigma=5.0, max_shift=0.1)
    plain = smooth_boxes(filled, window=7, sigma=5.0, max_shift=np.inf)
    assert np.abs(plain.boxes[:, 0] - xs).max() > 25
    assert np.abs(capped.boxes[:, 0] - xs).max() <= 15 + 1e-3  # 0.1 × the 150 px side


def test_smoothing_has_no_lag_and_removes_spikes():
    xs = np.arange(40, dtype=float) * 3  # a face moving right at 3 px/frame
    frames = [dets([x, 0, x + 50, 50]) for x in xs]
    frames[20] = dets([xs[20] + 30, 0, xs[20] + 80, 50])
    track = main_track(link_tracks(frames, [], 0.1, 2, 1.0), "longest", 1, (320, 240))
    face = smooth_boxes(fill_track(track, 40, [], 2), window=5, sigma=3.0)
    assert abs(face.boxes[20, 0] - xs[20]) < 2.0  # the 30 px spike is gone
    steady = np.r_[5:12, 29:35]  # away from the spike, a centred filter does not lag a steady motion
    assert np.abs(face.boxes[steady, 0] - xs[steady]).max() < 0.5


# --- the stage on real video ---------------------------------------------------------------------------------

def write_video(path, frames):
    with VideoWriter(path, fps=25, crf=10) as out:
        for frame in frames:
            out.write(frame)
    return path


def placed(face, canvas=(240, 320), x=100, y=40, angle=0.0, scale=1.0):
    """The face image placed (rotated by ``angle``°, scaled) on a grey canvas at (x, y)."""
    h, w = canvas
    m = cv2.getRotationMatrix2D((face.shape[1] / 2, face.shape[0] / 2), angle, scale)
    m[:, 2] += (x, y)
    return cv2.warpAffine(face, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))


@pytest.fixture(scope="module")
def head(astronaut):
    return np.ascontiguousarray(astronaut[40:240, 130:310])  # the astronaut's head and shoulders, 200 × 180


def test_stage_finds_a_face_rolled_45_degrees(tmp_path, head):
    clip = write_video(tmp_path / "rolled.mp4", [placed(head, angle=45, x=70 + k, y=20) for k in range(12)])
    out = track_face("rolled", clip, faces_params(min_track_frames=3))
    assert out["status"]["status"] == "ok"
    assert sum(r["source"] == "detected" for r in out["rows"]) >= 10
    rolls = [abs(r["roll"]) for r in out["rows"] if r["roll"] is not None]
    assert rolls and 30 < np.median(rolls) < 60  # the roll is measured from the detector's eye keypoints


def test_stage_face_leaves_and_returns(tmp_path, head):
    xs = [60] * 8 + [400] * 24 + [60] * 8  # in for 8 frames, out of the frame for 24, back for 8
    clip = write_video(tmp_path / "exit.mp4", [placed(head, x=x, y=20) for x in xs])
    out = track_face("exit", clip, faces_params(max_gap=4, min_track_frames=3))
    rows = out["rows"]
    assert out["status"]["status"] == "ok"
    assert all(r["valid"] for r in rows[:8]) and all(r["valid"] for r in rows[32:])
    assert not any(r["valid"] for r in rows[8:32])
    assert [r["source"] for r in rows[12:28]] == ["none"] * 16  # nothing past max_gap frames from a detection
    assert all(r["source"] in ("held", "landmarks") for r in rows[8:12])


def test_stage_shot_cut_splits_and_no_face_clip(tmp_path, head, astronaut):
    other = cv2.resize(astronaut, (320, 240))[::-1].copy()  # upside-down scene: no detectable upright face
    clip = write_video(tmp_path / "cut.mp4", [placed(head, x=70, y=20)] * 10 + [other] * 10)
    out = track_face("cut", clip, faces_params(max_gap=30, min_track_frames=3, search_angles=[]))
    sources = [r["source"] for r in out["rows"]]
    assert sources[:10] == ["detected"] * 10 and sources[10:] == ["none"] * 10  # the box is not held past the cut
    noise = np.random.default_rng(0).integers(0, 255, (20, 240, 320, 3), dtype=np.uint8)
    empty = track_face("none", write_video(tmp_path / "noise.mp4", noise), faces_params())
    assert empty["status"]["status"] == "no_face" and empty["rows"] == []


def test_stage_tiny_face_and_main_face_choice(tmp_path, head):
    tiny = [placed(head, canvas=(480, 640), x=300, y=200, scale=0.3) for _ in range(6)]  # face ≈ 27 px wide
    out = track_face("tiny", write_video(tmp_path / "tiny.mp4", tiny), faces_params(min_track_frames=3))
    assert out["status"]["status"] == "ok"
    assert all(r["source"] == "detected" for r in out["rows"])
    assert max(r["x2"] - r["x1"] for r in out["rows"]) < 50

    def two_faces():
        frame = placed(head, canvas=(240, 480), x=0, y=30, scale=0.9)
        small = placed(head, canvas=(240, 480), x=190, y=70, scale=0.5)
        return np.where(small == 90, frame, small)

    clip = write_video(tmp_path / "two.mp4", [two_faces() for _ in range(6)])
    largest = track_face("two", clip, faces_params(main_face="largest", min_track_frames=3))
    central = track_face("two", clip, faces_params(main_face="central", min_track_frames=3))
    assert largest["rows"][0]["x1"] < 150 < central["rows"][0]["x1"]  # the big face left, the small one central


def test_stage_missing_model_falls_back_to_the_next_detector(tmp_path, head):
    clip = write_video(tmp_path / "face.mp4", [placed(head, x=70, y=20)] * 5)
    out = track_face("fb", clip, faces_params(detector="scrfd|dlib_hog", min_track_frames=3, search_angles=[]))
    assert out["status"]["status"] == "ok" and out["rows"][0]["detector"] == "dlib_hog"
