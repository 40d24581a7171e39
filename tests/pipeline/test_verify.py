"""``python -m pipeline.verify``: our export against a folder in the official WFLW-V layout written here, with known
box offsets, label offsets, a frame-count difference and ids on one side only."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ldeq.metrics import nmf
from pipeline.export import export_wflw_v
from pipeline.verify import main

N = 5
IOD = 50.0


def face(frame: int) -> np.ndarray:
    pts = np.stack([np.linspace(100, 150, 98), np.linspace(100, 160, 98)], axis=1) + [2.0 * frame, 0]
    pts[60], pts[72] = [100 + 2.0 * frame, 120], [150 + 2.0 * frame, 120]
    return pts


def official_folder(root):
    """The official layout: bboxes/ (F, 4) and landmarks/ (F, 98, 2) per video, the two ID lists; no valid/."""
    for sub in ("bboxes", "landmarks", "videos"):
        (root / sub).mkdir(parents=True)
    videos = {"v_same": ("hard", N), "v_longer": ("easy", N + 2), "v_theirs_only": ("easy", N)}
    for vid, (_, n) in videos.items():
        np.save(root / "landmarks" / f"{vid}.npy", np.stack([face(k) for k in range(n)]))
        np.save(root / "bboxes" / f"{vid}.npy", np.tile([90.0, 90.0, 170.0, 170.0], (n, 1)))
    (root / "hard_video_IDs.txt").write_text("v_same\n")
    (root / "easy_video_IDs.txt").write_text("v_longer v_theirs_only\n")  # white space separates ids
    return root


def our_export(root, clip):
    shift = np.array([3.0, 4.0])  # 5 px from theirs on every point: 10 % of the inter-ocular distance
    for vid, n in (("v_same", N), ("v_longer", N), ("v_ours_only", N)):
        points = np.stack([face(k) + shift for k in range(n)]).astype(np.float32)
        boxes = np.tile(np.float32([100, 90, 180, 170]), (n, 1))  # 10 px right of theirs
        valid = np.ones(n, bool)
        if vid == "v_same":
            valid[2] = False  # not compared: our label there is not trusted
            points[2] = np.nan
        export_wflw_v(root, vid, boxes, points, clip, valid)
    (root / "hard_video_IDs.txt").write_text("v_same\n")
    (root / "easy_video_IDs.txt").write_text("v_ours_only\nv_longer\n")
    return root


@pytest.fixture
def folders(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"clip")
    return official_folder(tmp_path / "official"), our_export(tmp_path / "ours", clip)


def test_every_video_of_either_side_gets_a_row(folders, tmp_path, capsys):
    official, ours = folders
    out = tmp_path / "verify.csv"
    assert main([str(official), "--ours", str(ours), "--csv", str(out)]) == 0
    rows = {r["video_id"]: r for r in csv.DictReader(out.open())}
    assert {v: r["status"] for v, r in rows.items()} == {
        "v_same": "ok", "v_longer": "frame_count_differs", "v_theirs_only": "missing_ours",
        "v_ours_only": "missing_official"}
    same = rows["v_same"]
    iou = 70 * 80 / (2 * 80 * 80 - 70 * 80)  # boxes 80 px wide, 10 px apart
    assert float(same["box_iou"]) == pytest.approx(iou, abs=1e-6)
    assert float(same["nme"]) == pytest.approx(100 * 5 / IOD, abs=1e-4)
    assert (same["official_frames"], same["our_frames"], same["frames_compared"]) == ("5", "5", "4")
    # a constant offset does not flicker; NMF runs over the longest valid run (frames 0-1: the first of two)
    assert float(same["nmf"]) == pytest.approx(0.0, abs=1e-3)
    longer = rows["v_longer"]
    assert (longer["official_frames"], longer["our_frames"], longer["frames_compared"]) == ("7", "5", "5")
    assert (longer["official_subset"], longer["our_subset"]) == ("easy", "easy")
    printed = capsys.readouterr().out
    assert printed.startswith("verify: 2 videos on both sides (2 in the same subset), 1 official videos missing "
                              "from ours, 1 of ours not in the official lists, 1 with another frame count; mean box "
                              f"IoU {iou:.3f}, NME 10.000 %")


def test_nmf_is_ldeqs_on_the_frames_both_sides_trust(folders, tmp_path):
    official, ours = folders
    jitter = np.stack([face(k) + [(-1.0) ** k, 0.0] for k in range(N)]).astype(np.float32)
    np.save(ours / "landmarks" / "v_longer.npy", jitter)
    main([str(official), "--ours", str(ours), "--csv", str(tmp_path / "v.csv")])
    row = next(r for r in csv.DictReader((tmp_path / "v.csv").open()) if r["video_id"] == "v_longer")
    theirs = np.stack([face(k) for k in range(N)])
    assert float(row["nmf"]) == pytest.approx(nmf(jitter.astype(np.float64), theirs), rel=1e-5)


@pytest.mark.parametrize("spoil, message", [
    (lambda o: (o / "easy_video_IDs.txt").unlink(), "easy_video_IDs.txt: split list not found"),
    (lambda o: (o / "landmarks" / "v_longer.npy").unlink(), "v_longer.npy: landmarks file not found"),
    (lambda o: (o / "bboxes" / "v_same.npy").unlink(), "v_same.npy: bboxes file not found"),
    (lambda o: np.save(o / "landmarks" / "v_same.npy", np.zeros((5, 68, 2))), "v_same.npy: shape (5, 68, 2)"),
])
def test_an_official_folder_with_missing_files_is_one_error_line(folders, tmp_path, capsys, spoil, message):
    official, ours = folders
    spoil(official)
    assert main([str(official), "--ours", str(ours), "--csv", str(tmp_path / "v.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "v.csv").exists()
