import numpy as np

from pipeline.faces.detectors import Detections, create_detector
from pipeline.faces.tracker import fill_and_smooth, iou, link_tracks, main_track


def dets(*boxes, score=1.0):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), score, np.float32))


def test_dlib_hog_finds_the_astronaut(astronaut):
    found = create_detector("dlib_hog", max_side=512).detect(astronaut)
    assert len(found) == 1
    x1, y1, x2, y2 = found.boxes[0]
    assert 160 < x1 < 200 and 60 < y1 < 100 and 250 < x2 < 290 and 150 < y2 < 190


def test_detector_downscaling_maps_boxes_back(astronaut):
    full = create_detector("dlib_hog", max_side=512).detect(astronaut).boxes[0]
    big = np.kron(astronaut, np.ones((2, 2, 1), np.uint8))  # 1024×1024 frame
    half = create_detector("dlib_hog", max_side=512).detect(big).boxes[0]
    assert np.allclose(half, 2 * full, atol=4)


def test_iou():
    assert iou(np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10])) == 1.0
    assert iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == 50 / 150
    assert iou(np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3])) == 0.0


def test_tracks_link_through_gaps_and_main_face_wins():
    face = [10, 10, 50, 50]
    frames = [dets(face, [200, 200, 210, 210]), dets(face), dets(), dets([12, 11, 52, 51]), dets([300, 0, 320, 20])]
    tracks = link_tracks(frames, iou_threshold=0.3, max_gap=2)
    main = main_track(tracks, min_frames=2)
    assert main.frames == [0, 1, 3]
    assert len(tracks) == 3
    assert main_track(tracks, min_frames=4) is None


def test_gap_longer_than_max_gap_starts_a_new_track():
    face = [10, 10, 50, 50]
    frames = [dets(face), dets(), dets(), dets(), dets(face)]
    assert len(link_tracks(frames, max_gap=1)) == 2
    assert len(link_tracks(frames, max_gap=3)) == 1


def test_fill_interpolates_and_flags():
    frames = [dets([0, 0, 10, 10]), dets(), dets([10, 0, 20, 10])]
    track = main_track(link_tracks(frames, iou_threshold=0.0, max_gap=2))
    boxes, interpolated = fill_and_smooth(track, 4, window=1)
    assert interpolated.tolist() == [False, True, False, True]
    assert np.allclose(boxes[1], [5, 0, 15, 10])
    assert np.allclose(boxes[3], [10, 0, 20, 10])  # held after the last detection


def test_smoothing_removes_a_single_frame_spike():
    track_frames = [dets([100, 100, 200, 200]) for _ in range(9)]
    track_frames[4] = dets([130, 100, 230, 200])
    track = main_track(link_tracks(track_frames, iou_threshold=0.1))
    boxes, _ = fill_and_smooth(track, 9, window=5)
    assert np.allclose(boxes[4], [100, 100, 200, 200])


def test_gaussian_smoothing_turns_a_detector_step_into_a_ramp():
    track_frames = [dets([100, 100, 200, 200]) for _ in range(20)] + [dets([120, 100, 220, 200]) for _ in range(20)]
    track = main_track(link_tracks(track_frames, iou_threshold=0.1))
    stepped, _ = fill_and_smooth(track, 40, window=5)
    ramped, _ = fill_and_smooth(track, 40, window=5, sigma=4.0)
    assert np.abs(np.diff(stepped[:, 0])).max() == 20  # the median keeps the step
    steps = np.diff(ramped[:, 0])
    assert steps.max() < 20 / (np.sqrt(2 * np.pi) * 4.0) + 0.1 and np.all(steps >= 0)
    assert np.allclose(ramped[0], [100, 100, 200, 200], atol=0.01) and np.allclose(ramped[-1], [120, 100, 220, 200],
                                                                                    atol=0.01)
    assert np.allclose(ramped[:, 2] - ramped[:, 0], 100)  # the size is untouched by a pure shift


def test_stitching_joins_a_track_broken_by_a_fast_move():
    from pipeline.faces.tracker import stitch_tracks

    frames = [dets([0, 0, 40, 40]), dets([2, 0, 42, 40]), dets(), dets([20, 0, 60, 40]), dets([22, 0, 62, 40]),
              dets([300, 300, 340, 340])]
    tracklets = link_tracks(frames, iou_threshold=0.5, max_gap=3)
    assert len(tracklets) == 3  # the jump at frame 3 has IoU < 0.5
    stitched = stitch_tracks(tracklets, max_gap=3, max_shift=0.6)
    assert [t.frames for t in stitched] == [[0, 1, 3, 4], [5]]
