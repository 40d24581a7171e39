"""Renders and contact sheets: what is drawn where, every output format, overlays read back from manifests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.manifest import ManifestError, write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.render import (
    BOX_COLOURS,
    CONSENSUS_INVALID,
    CONSENSUS_VALID,
    Overlay,
    contact_sheet,
    draw_frame,
    family_colour,
    frame_uncertainty,
    load_overlay,
    pick_frames,
    render_video,
)
from pipeline.video import VideoWriter, probe, read_frames

SCORE = stage_params("score", PROJECT_PARAMS, weights={"disagreement": 1.0, "instability": 1.0, "confidence": 0.0,
                                                       "valid_share": 0.0})


def shape98(cx: float, cy: float, r: float) -> np.ndarray:
    """98 distinct points on an ellipse (a stand-in face shape; 60 and 72 land on opposite sides)."""
    t = np.linspace(0, 2 * np.pi, 98, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], axis=1).astype(np.float32)


def overlay(n: int, consensus: np.ndarray, model: np.ndarray, box: tuple[float, ...], clip: str = "") -> Overlay:
    return Overlay(video_id="v", clip=clip, fps=10.0, boxes=np.tile(np.float32(box), (n, 1)),
                   box_source=("detected",) * n, models=(("dlib_68", "dlib_ert", np.stack([model] * n)),),
                   consensus=np.stack([consensus] * n), valid=np.arange(n) % 2 == 0,
                   uncertainty=np.linspace(0.1, 0.5, n), subset="hard", rank=1, score=0.3)


def test_draw_frame_puts_points_box_and_validity_where_they_belong():
    frame = np.full((120, 160, 3), 90, np.uint8)
    cons = np.full((98, 2), np.nan, np.float32)
    cons[0] = (40, 60)
    model = np.full((98, 2), np.nan, np.float32)
    model[0] = (100, 60)
    ov = overlay(2, cons, model, (20, 20, 140, 110))
    valid, invalid = draw_frame(frame, ov, 0), draw_frame(frame, ov, 1)
    assert valid.shape[1] == 160 and valid.shape[0] > 120  # the panel goes under the frame
    assert tuple(valid[60, 40]) == CONSENSUS_VALID and tuple(invalid[60, 40]) == CONSENSUS_INVALID
    assert tuple(valid[60, 100]) == family_colour("dlib_ert")
    assert tuple(valid[70, 20]) == BOX_COLOURS["detected"]  # on the box's left edge
    assert (frame == 90).all()  # the decoded frame itself is never drawn on
    half = draw_frame(frame, ov, 0, scale=0.5)
    assert half.shape[1] == 80 and tuple(half[30, 20]) == CONSENSUS_VALID


def test_family_colours_are_stable_and_distinct_for_known_families():
    known = [family_colour(f) for f in ("dlib_ert", "mediapipe_mesh", "faceapi_cnn", "insightface")]
    assert len(set(known)) == 4
    assert family_colour("retinaface") == family_colour("retinaface")


@pytest.fixture()
def clip(tmp_path, astronaut):
    path = tmp_path / "clip.mp4"
    img = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    with VideoWriter(path, fps=10) as out:
        for k in range(6):
            out.write(np.roll(img, k, axis=1))
    return path


@pytest.mark.parametrize("suffix", [".webp", ".gif", ".mp4"])
def test_render_video_writes_every_frame_in_each_format(tmp_path, clip, suffix):
    ov = overlay(6, shape98(80, 70, 25), shape98(82, 70, 25), (45, 35, 115, 115), str(clip))
    out = render_video(ov, tmp_path / f"render{suffix}", max_side=120)
    if suffix == ".mp4":
        info = probe(out)
        assert len(read_frames(out)) == 6 and info.width == 120 and info.height > 120  # panel under the frame
    else:
        with Image.open(out) as im:
            assert im.n_frames == 6 and im.size[0] == 120 and im.is_animated


def test_render_refuses_unknown_formats_naming_the_file(tmp_path, clip):
    ov = overlay(6, shape98(80, 70, 25), shape98(82, 70, 25), (45, 35, 115, 115), str(clip))
    with pytest.raises(ValueError, match=r"render\.avi"):
        render_video(ov, tmp_path / "render.avi")


def test_render_picks_frames_and_refuses_bad_sizes_and_frames(tmp_path, clip):
    ov = overlay(6, shape98(80, 70, 25), shape98(82, 70, 25), (45, 35, 115, 115), str(clip))
    out = render_video(ov, tmp_path / "part.gif", max_side=80, frames=[1, 3, 4])
    with Image.open(out) as im:
        assert im.n_frames == 3
    for bad in ({"max_side": 0}, {"max_side": -5}, {"frames": [6]}, {"frames": []}, {"frames": [-1]}):
        with pytest.raises(ValueError, match=r"bad\.gif"):
            render_video(ov, tmp_path / "bad.gif", **bad)


def write_manifests(root, clip, n=6):
    """Every manifest of one video ``v``: two model families, annotations with an invalid frame, a scores row."""
    cons, a, b = shape98(80, 70, 25), shape98(81, 70, 25), shape98(80, 72, 25)
    mask_b = np.arange(98) < 60
    write_rows([{"video_id": "v", "status": "ok", "path": str(clip), "n_frames": n, "fps": 10.0}], "clips",
               root / "clips.parquet")
    write_rows([{"video_id": "v", "frame": k, "track_id": 0, "detector": "d", "n_detections": 1,
                 "source": "detected" if k < n - 1 else "held", "valid": k < n - 1, "x1": 45.0, "y1": 35.0,
                 "x2": 115.0, "y2": 115.0} for k in range(n)], "faces", root / "faces.parquet")
    lm = []
    for k in range(n):
        lm.append({"video_id": "v", "frame": k, "model": "dlib_68", "family": "dlib_ert", "scheme": "ibug68",
                   "points": a[:68], "wflw98": a, "mask": np.ones(98, bool)})
        lm.append({"video_id": "v", "frame": k, "model": "faceapi_68", "family": "faceapi_cnn", "scheme": "ibug68",
                   "points": b[:68], "wflw98": np.where(mask_b[:, None], b, 0), "mask": mask_b})
    write_rows(lm, "landmarks", root / "landmarks.parquet")
    write_rows([{"video_id": "v", "frame": k, "subset": "hard", "x1": 45.0, "y1": 35.0, "x2": 115.0, "y2": 115.0,
                 "landmarks": cons, "n_models": 2, "valid": k != 2} for k in range(n)], "annotations",
               root / "annotations.parquet")
    d = np.linspace(0.1, 0.6, n).astype(np.float32)
    i = np.full(n, 0.05, np.float32)
    write_rows([{"video_id": "v", "status": "ok", "uncertainty": 0.3, "frame_valid": [k != 2 for k in range(n)],
                 "frame_disagreement": d, "frame_instability": i, "frame_confidence": np.full(n, np.nan),
                 "rank": 1, "subset": "hard"}], "scores", root / "scores.parquet")
    return cons, a, b, mask_b, d + i


def test_load_overlay_reads_one_video_from_the_manifests(tmp_path, clip):
    cons, a, b, mask_b, u = write_manifests(tmp_path, clip)
    ov = load_overlay("v", tmp_path, SCORE)
    assert ov.n_frames == 6 and ov.clip == str(clip) and ov.subset == "hard" and ov.rank == 1
    assert ov.box_source[-1] == "held" and np.allclose(ov.boxes[0], [45, 35, 115, 115])
    assert [(m, f) for m, f, _ in ov.models] == [("dlib_68", "dlib_ert"), ("faceapi_68", "faceapi_cnn")]
    assert np.allclose(ov.models[0][2][3], a)
    assert np.isnan(ov.models[1][2][3][~mask_b]).all() and np.allclose(ov.models[1][2][3][mask_b], b[mask_b])
    assert np.allclose(ov.consensus[4], cons) and ov.valid.tolist() == [True, True, False, True, True, True]
    # the frame's uncertainty uses the per-video formula (weights: disagreement + instability); invalid: unscored
    assert np.isnan(ov.uncertainty[2]) and np.allclose(np.delete(ov.uncertainty, 2), np.delete(u, 2))
    with pytest.raises(ManifestError, match="clips.parquet: no video 'w'"):
        load_overlay("w", tmp_path, SCORE)


def test_frame_uncertainty_follows_the_score_weights():
    row = {"frame_valid": [True, True, False], "frame_disagreement": [0.2, 0.4, 0.9],
           "frame_instability": [0.1, 0.0, 0.9], "frame_confidence": [0.5, 1.0, 0.0]}
    conf_only = stage_params("score", PROJECT_PARAMS, weights={"disagreement": 0.0, "instability": 0.0,
                                                               "confidence": 2.0, "valid_share": 0.0})
    assert np.allclose(frame_uncertainty(row, SCORE)[:2], [0.3, 0.4])
    assert np.allclose(frame_uncertainty(row, conf_only)[:2], [1.0, 0.0])
    assert np.isnan(frame_uncertainty(row, SCORE)[2])


def test_pick_frames_takes_the_extremes_with_a_cap_per_video():
    u = {"a": np.array([0.9, 0.8, 0.7, np.nan]), "b": np.array([0.1, 0.85, np.nan]), "c": np.array([0.2])}
    assert pick_frames(u, 3, worst=True, per_video=2) == [("a", 0), ("b", 1), ("a", 1)]
    assert pick_frames(u, 2, worst=False, per_video=1) == [("b", 0), ("c", 0)]
    assert pick_frames({"a": np.array([np.nan])}, 3, worst=True) == []


def test_contact_sheet_tiles_the_picked_frames(tmp_path, clip):
    write_manifests(tmp_path, clip)
    ov = load_overlay("v", tmp_path, SCORE)
    picks = [(ov, k) for k in (0, 3, 5)]
    out = contact_sheet(picks, tmp_path / "sheet.png", "worst", cols=2, tile=100)
    sheet = cv2.imread(str(out))
    assert sheet.shape[:2] == (30 + 2 * (100 + 34), 200)
    first = sheet[30:130, 0:100]
    assert first.std() > 10  # a real picture in the tile, not the blank background
    assert np.abs(sheet[164:264, 100:200].astype(int) - 24).max() == 0  # the 4th cell stays empty
    with pytest.raises(ValueError, match="sheet.png"):
        contact_sheet([], tmp_path / "sheet.png", "none")
