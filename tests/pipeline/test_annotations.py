import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.annotations import video_annotations
from pipeline.export import SPLIT_LISTS, SPLIT_TABLE, export_wflw_v, load_wflw_v, write_split
from pipeline.landmarks.schemes import scheme_map, to_wflw98
from pipeline.manifest import ManifestError, read_table, write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.report import label_reference_distance
from pipeline.schemas import schema
from pipeline.sources import read_id_lists
from pipeline.uncertainty import select_subsets

P = stage_params("score", PROJECT_PARAMS, n_hard=1)
N = 5
MODELS = [("dlib_68", "dlib_ert", "ibug68", 68), ("mesh", "mediapipe_mesh", "mesh468", 468),
          ("retinaface_5", "retinaface", "five", 5)]


def native_faces():
    """One face in each native layout, mapped to the same WFLW-98 points (so that the families agree)."""
    rng = np.random.default_rng(0)
    ibug = rng.uniform(120, 180, (68, 2))
    ibug[36], ibug[45] = [125, 140], [175, 140]  # outer eye corners: a sane inter-ocular distance
    ref, _ = to_wflw98(ibug, "ibug68")
    mesh_map = scheme_map("mesh468")
    mesh = np.full((468, 2), 150.0)
    for w in np.flatnonzero(mesh_map.mask):
        cols = np.flatnonzero(mesh_map.weights[w])
        if len(cols) == 1:  # points the mesh takes from one vertex; the rest it interpolates as iBUG does
            mesh[cols[0]] = ref[w] if np.isfinite(ref[w]).all() else ref[33:38].mean(0) + [0, 5]
    return {"ibug68": ibug, "mesh468": mesh, "five": ref[[96, 97, 54, 76, 82]]}


def landmark_rows(models, lost=()):
    """Each model's native points (the common face plus noise) for frames not in ``lost``."""
    rows = []
    rng = np.random.default_rng(1)
    shapes = native_faces()
    for frame in range(N):
        if frame in lost:
            continue
        for name, family, scheme, _ in models:
            native = (shapes[scheme] + rng.normal(0, 0.3, shapes[scheme].shape)).astype(np.float32)
            wflw, mask = to_wflw98(native, scheme)
            rows.append({"video_id": "v", "frame": frame, "model": name, "family": family, "scheme": scheme,
                         "points": native, "wflw98": np.nan_to_num(wflw), "mask": mask, "confidence": 0.9})
    return rows


def face_rows(invalid=()):
    return [{"video_id": "v", "frame": f, "track_id": 0, "detector": "d", "n_detections": 1, "det_score": 0.9,
             "source": "none" if f in invalid else "detected", "valid": f not in invalid,
             "x1": np.nan if f in invalid else 100.0, "y1": 100.0, "x2": 200.0, "y2": 200.0} for f in range(N)]


def annotate(tmp_path, models, lost=(), invalid=()):
    write_rows(landmark_rows(models, lost), "landmarks", tmp_path / "l.parquet")
    write_rows(face_rows(invalid), "faces", tmp_path / "f.parquet")
    return video_annotations("v", "hard", read_table(tmp_path / "l.parquet", "landmarks"),
                             read_table(tmp_path / "f.parquet", "faces"), P)


def test_annotations_need_every_wflw_point(tmp_path):
    with pytest.raises(ValueError, match=r"v: WFLW-98 points \[38, 39, 40, 41, 47, 48, 49, 50\] are defined by no"):
        annotate(tmp_path, [MODELS[0], MODELS[2]])


def test_annotations_and_export_roundtrip_with_invalid_frames_kept(tmp_path):
    result = annotate(tmp_path, MODELS, lost=(3,), invalid=(3,))
    assert result["valid"].tolist() == [True, True, True, False, True]
    assert result["points"].shape == (N, 98, 2) and not np.isnan(result["points"][result["valid"]]).any()
    assert np.isnan(result["points"][3]).all()  # no model ran there: nothing is made up
    assert [r["n_models"] for r in result["rows"]] == [3, 3, 3, 0, 3]  # models that labelled the frame
    assert [r["box_source"] for r in result["rows"]][3] == "none"
    support = np.array(result["rows"][0]["support"])
    assert support[[54, 96, 97]].min() == 3 and support[38] == 1  # lower brow: the mesh alone
    # schema round trip: what is written is read back, column for column
    write_rows(result["rows"], "annotations", tmp_path / "a.parquet")
    back = read_table(tmp_path / "a.parquet", "annotations")
    assert back.schema.equals(schema("annotations"), check_metadata=False)
    assert back.column("valid").to_pylist() == result["valid"].tolist()
    got = np.array(back.column("landmarks").to_pylist(), np.float32)
    assert np.array_equal(got, result["points"], equal_nan=True)
    assert pq.read_metadata(tmp_path / "a.parquet").num_rows == N
    # the official .npy layout, with the valid flags beside it
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"video bytes")
    export_wflw_v(tmp_path / "out", "v", result["boxes"], result["points"], clip, result["valid"])
    boxes, points, valid = load_wflw_v(tmp_path / "out", "v")
    assert boxes.shape == (N, 4) and boxes.dtype == np.float32 and np.isnan(boxes[3, 0])
    assert np.array_equal(points, result["points"], equal_nan=True) and points.dtype == np.float32
    assert valid.tolist() == result["valid"].tolist()
    assert (tmp_path / "out" / "videos" / "v.mp4").read_bytes() == b"video bytes"
    with pytest.raises(ValueError, match="not a safe file name"):
        export_wflw_v(tmp_path / "out", "../x", result["boxes"], result["points"], clip)
    with pytest.raises(ValueError, match="valid flags"):
        export_wflw_v(tmp_path / "out", "v", result["boxes"], result["points"], clip, result["valid"][:2])


def test_split_lists_in_the_official_format_with_their_uncertainty(tmp_path):
    """The export names its hard and easy videos like the official release (one id per line), in rank order, with
    the uncertainty that chose them beside; a subset video whose export is missing is not listed."""
    rows = [{"video_id": f"v{i}", "status": "ok", "uncertainty": 0.1 * i, "disagreement": 0.05 * i,
             "instability": 0.01, "confidence": 0.9, "valid_share": 1.0, "n_frames": N} for i in range(6)]
    rows.append({"video_id": "gone", "status": "unlabelable", "error": "1 of 5 frames valid"})
    write_rows(select_subsets(rows, 2), "scores", tmp_path / "scores.parquet")  # hard v5, v4; easy v1, v0
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"clip")
    export = tmp_path / "export"
    for vid in ("v5", "v4", "v3", "v0"):  # v1 (easy) failed in annotate: nothing exported
        export_wflw_v(export, vid, np.zeros((N, 4)), np.zeros((N, 98, 2)), clip)
    assert write_split(export, tmp_path / "scores.parquet") == {"hard": ["v5", "v4"], "easy": ["v0"]}
    assert (export / SPLIT_LISTS["hard"]).read_bytes() == b"v5\nv4\n"  # the official lists' layout
    assert (export / SPLIT_LISTS["easy"]).read_bytes() == b"v0\n"
    assert read_id_lists(export / SPLIT_LISTS["easy"], export / SPLIT_LISTS["hard"]) == {
        "v5": "hard", "v4": "hard", "v0": "easy"}  # the reader of the official lists takes ours
    table = pd.read_csv(export / SPLIT_TABLE)
    assert table.video_id.tolist() == ["v5", "v4", "v0"] and table["rank"].tolist() == [1, 2, 6]
    assert table.subset.tolist() == ["hard", "hard", "easy"]
    assert table.uncertainty.tolist() == pytest.approx([0.5, 0.4, 0.0])
    assert table.disagreement.tolist() == pytest.approx([0.25, 0.2, 0.0])


def test_label_reference_distance_per_level():
    ref = np.zeros((98, 2))
    ref[72] = [100, 0]
    ann = pd.DataFrame({"video_id": ["a", "a"], "frame": [0, 1], "landmarks": [list(ref + [5, 0]), list(ref)]})
    demo = pd.DataFrame({"video_id": ["a", "a"], "frame": [0, 1], "difficulty": [2, 2], "has_truth": [True, True],
                         "reference_landmarks": [list(ref), list(ref)]})
    table = label_reference_distance(ann, demo)
    assert table.difficulty.tolist() == [2] and table.frames.tolist() == [2]
    assert table.reference_distance.iloc[0] == pytest.approx((5.0 + 0.0) / 2)  # 5 px / 100 px inter-ocular, mean


def test_score_and_annotate_stages_end_to_end(tmp_path):
    import yaml

    from stages import annotate as annotate_stage
    from stages import score as score_stage

    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    params["score"]["n_hard"] = 1
    params["annotate"]["export_dir"] = str(tmp_path / "export")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    landmarks, faces, clips, status = [], [], [], []
    # in video-id order, as every stage writes its manifests (score and annotate stream them one video at a time)
    for vid, noise, invalid in (("calm", 0.3, ()), ("gone", 0.3, tuple(range(N))), ("wild", 4.0, ())):
        rows = [dict(r, video_id=vid) for r in landmark_rows(MODELS, lost=invalid)]
        rng = np.random.default_rng(len(vid))
        for r in rows:  # families disagree by about `noise` px
            r["wflw98"] = (r["wflw98"] + rng.normal(0, noise, (98, 2))).astype(np.float32)
        landmarks += rows
        faces += [dict(r, video_id=vid) for r in face_rows(invalid)]
        clip = tmp_path / f"{vid}.mp4"
        clip.write_bytes(vid.encode())
        clips.append({"video_id": vid, "status": "ok", "path": str(clip), "n_frames": N})
        status.append({"stage": "label", "video_id": vid, "status": "ok", "n_frames": N})
    status.append({"stage": "label", "video_id": "broken", "status": "decode_error", "error": "bad file"})
    for rows, name in ((landmarks, "landmarks"), (faces, "faces"), (clips, "clips"), (status, "video_status")):
        write_rows(rows, name, tmp_path / f"{name}.parquet")
    common = ["--params", str(tmp_path / "params.yaml"), "--landmarks", str(tmp_path / "landmarks.parquet"),
              "--faces", str(tmp_path / "faces.parquet")]
    assert score_stage.main(common + ["--label-status", str(tmp_path / "video_status.parquet"),
                                      "--out", str(tmp_path / "scores.parquet")]) == 0
    scores = {r["video_id"]: r for r in read_table(tmp_path / "scores.parquet", "scores").to_pylist()}
    assert {v: (r["status"], r["subset"]) for v, r in scores.items()} == {
        "wild": ("ok", "hard"), "calm": ("ok", "easy"), "gone": ("unlabelable", None), "broken": ("skipped", None)}
    assert len(scores["calm"]["frame_valid"]) == N and scores["wild"]["uncertainty"] > scores["calm"]["uncertainty"]
    assert annotate_stage.main(common + ["--scores", str(tmp_path / "scores.parquet"), "--clips",
                                         str(tmp_path / "clips.parquet"), "--out", str(tmp_path / "a.parquet")]) == 0
    ann = read_table(tmp_path / "a.parquet", "annotations").to_pandas()
    assert sorted(ann.video_id.unique()) == ["calm", "wild"] and len(ann) == 2 * N
    boxes, points, valid = load_wflw_v(tmp_path / "export", "wild")
    assert points.shape == (N, 98, 2) and valid.shape == (N,)
    assert read_id_lists(tmp_path / "export" / SPLIT_LISTS["easy"], tmp_path / "export" / SPLIT_LISTS["hard"]) == {
        "wild": "hard", "calm": "easy"}


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_corrections_propagate_with_the_head_between_corrected_frames():
    from pipeline.annotations import VideoCorrections, apply_corrections

    rng = np.random.default_rng(3)
    shape = rng.uniform(-40, 40, (98, 2))
    bias = rng.normal(0, 3, (98, 2))  # the consensus' error, fixed on the face: it turns and scales with the head
    n = 21
    frames = np.arange(n)
    pose = [(1 + 0.02 * k, _rot(0.04 * k), np.array([200.0 + 3 * k, 150.0 - k])) for k in frames]
    truth = np.stack([s * shape @ r.T + t for s, r, t in pose])
    pseudo = np.stack([s * (shape + bias) @ r.T + t for s, r, t in pose])
    valid = np.ones(n, bool)
    valid[[5, 13]] = False  # the families disagreed there: no anchor, but the offset is carried there
    box = np.ones(n, bool)
    box[18] = valid[18] = False  # the face left between 17 and 19: nothing is carried across
    fixes = {f: truth[f] for f in (0, 10, 13, 16, 20)}
    points, flags, source = apply_corrections("v", frames, pseudo, valid, box, VideoCorrections(fixes, 10))
    assert [source[f] for f in frames] == (["human"] + ["propagated"] * 9 + ["human"] + ["propagated"] * 2
                                           + ["human", "propagated", "propagated", "human"] + ["pseudo"] * 3
                                           + ["human"])
    assert flags[13] and not flags[5] and not flags[18]  # a person's frame is valid; a propagated one keeps its flag
    between = [f for f in frames if source[f] == "propagated"]
    assert np.abs(points[between] - truth[between]).max() < 1e-3  # exact: the offset turned and scaled with the head
    # 10 → 16 spans the invalid frame 13: propagated around it from 10 and 16, while 13 itself is the person's
    assert np.array_equal(points[13], truth[13].astype(np.float32))
    assert np.array_equal(points[17:20][[0, 2]], pseudo[[17, 19]].astype(np.float32))
    # beyond propagate_max_gap nothing is carried
    _, _, far = apply_corrections("v", frames, pseudo, valid, box, VideoCorrections({0: truth[0], 20: truth[20]}, 10))
    assert far.count("propagated") == 0 and far.count("human") == 2
    with pytest.raises(ValueError, match=r"v: corrected frame\(s\) \[25\] are not frames of the clip \(21 frames\)"):
        apply_corrections("v", frames, pseudo, valid, box, VideoCorrections({25: truth[0]}, 10))


def test_read_corrections_latest_wins(tmp_path):
    from pipeline.annotations import read_corrections

    def row(frame, value, when):
        return {"video_id": "v", "frame": frame, "landmarks": np.full((98, 2), value, np.float32), "width": 64,
                "height": 48, "annotator": "a@b.c", "annotated_at": when, "task_id": 1, "annotation_id": 1,
                "export_file": "x.json"}

    write_rows([row(3, 1.0, "2026-05-02T10:00:00Z"), row(4, 2.0, "2026-05-01T10:00:00Z")], "corrections",
               tmp_path / "a.parquet")
    write_rows([row(3, 5.0, "2026-05-01T10:00:00+00:00"), row(4, 6.0, "2026-05-03T09:00:00+02:00")], "corrections",
               tmp_path / "b.parquet")
    (tmp_path / "README.md").write_text("not a manifest")
    got = read_corrections(tmp_path)
    assert sorted(got) == ["v"] and got["v"][3][0, 0] == 1.0 and got["v"][4][0, 0] == 6.0
    assert read_corrections(tmp_path / "absent") == {}
    write_rows([row(3, 1.0, "yesterday")], "corrections", tmp_path / "c.parquet")
    with pytest.raises(ManifestError, match=r"c.parquet: row 0: annotated_at 'yesterday' is not an ISO 8601 time"):
        read_corrections(tmp_path)
