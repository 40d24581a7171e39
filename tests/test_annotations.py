import numpy as np
import pandas as pd
import pytest

from pipeline.annotations import video_annotations
from pipeline.export import export_wflw_v
from pipeline.landmarks.schemes import to_wflw98
from pipeline.manifest import read_table, write_rows
from pipeline.report import label_quality


def landmark_rows(models):
    rows = []
    rng = np.random.default_rng(0)
    for frame in range(3):
        for name, family, scheme, n in models:
            native = rng.uniform(100, 200, (n, 2)).astype(np.float32)
            wflw, mask = to_wflw98(native, scheme)
            rows.append({"video_id": "v", "frame": frame, "model": name, "family": family, "scheme": scheme,
                         "points": native, "wflw98": np.nan_to_num(wflw), "mask": mask})
    return rows


def face_rows():
    return [{"video_id": "v", "frame": f, "track_id": 0, "detector": "d", "n_detections": 1, "interpolated": False,
             "x1": 90.0, "y1": 90.0, "x2": 210.0, "y2": 210.0} for f in range(3)]


def test_annotations_need_every_wflw_point(tmp_path):
    write_rows(landmark_rows([("dlib_68", "dlib_ert", "ibug68", 68)]), "landmarks", tmp_path / "l.parquet")
    write_rows(face_rows(), "faces", tmp_path / "f.parquet")
    with pytest.raises(ValueError, match=r"v: WFLW-98 points \[38, 39, 40, 41, 47, 48, 49, 50\] are defined by no"):
        video_annotations("v", "hard", read_table(tmp_path / "l.parquet", "landmarks"),
                          read_table(tmp_path / "f.parquet", "faces"))


def test_annotations_and_export_roundtrip(tmp_path):
    models = [("dlib_68", "dlib_ert", "ibug68", 68), ("mesh", "mediapipe_mesh", "mesh468", 468)]
    write_rows(landmark_rows(models), "landmarks", tmp_path / "l.parquet")
    write_rows(face_rows(), "faces", tmp_path / "f.parquet")
    result = video_annotations("v", "easy", read_table(tmp_path / "l.parquet", "landmarks"),
                               read_table(tmp_path / "f.parquet", "faces"))
    assert result["points"].shape == (3, 98, 2) and not np.isnan(result["points"]).any()
    assert [r["n_models"] for r in result["rows"]] == [1, 1, 1]  # brow lower edges come from one family only
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"video bytes")
    export_wflw_v(tmp_path / "out", "v", result["boxes"], result["points"], clip)
    assert np.load(tmp_path / "out" / "bboxes" / "v.npy").shape == (3, 4)
    assert np.allclose(np.load(tmp_path / "out" / "landmarks" / "v.npy"), result["points"])
    assert (tmp_path / "out" / "videos" / "v.mp4").read_bytes() == b"video bytes"
    with pytest.raises(ValueError, match="not a safe file name"):
        export_wflw_v(tmp_path / "out", "../x", result["boxes"], result["points"], clip)


def test_label_quality_per_level():
    gt = np.zeros((98, 2))
    gt[72] = [100, 0]
    ann = pd.DataFrame({"video_id": ["a", "a"], "frame": [0, 1], "landmarks": [list(gt + [5, 0]), list(gt)]})
    truth = pd.DataFrame({"video_id": ["a", "a"], "frame": [0, 1], "difficulty": [2, 2], "has_truth": [True, True],
                          "landmarks": [list(gt), list(gt)]})
    table = label_quality(ann, truth)
    assert table.difficulty.tolist() == [2] and table.frames.tolist() == [2]
    assert table.label_nme.iloc[0] == pytest.approx((5.0 + 0.0) / 2)  # 5 px / 100 px inter-ocular, ×100, mean
