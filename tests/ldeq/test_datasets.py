"""``ldeq.datasets.WFLWVideo`` over an export written here by the pipeline's own exporter: the right frames in any
order and in DataLoader workers, clips inside valid runs, and one LDEQ training step from it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import ROOT, frame_index, ramp_video
from ldeq.config import get_config
from ldeq.datasets import LDEQInput, WFLWVideo
from ldeq.layout import LayoutError
from ldeq.model import LDEQ
from ldeq.train import train
from pipeline.export import export_wflw_v, write_split
from pipeline.manifest import write_rows

W, H = 96, 96
VIDEOS = {  # id: (subset, frames, invalid frames)
    "e1": ("easy", 12, {5}),
    "h1": ("hard", 40, set()),  # longer than one GOP of the writer: backward reads must seek
}


def shape(frame: int) -> np.ndarray:
    """A face-like 98-point shape inside the box, moving 0.5 px a frame."""
    t = np.linspace(0, 2 * np.pi, 98, endpoint=False)
    pts = np.stack([48 + 20 * np.cos(t), 50 + 24 * np.sin(t)], axis=1) + [0.5 * frame, 0]
    pts[60], pts[72] = [36 + 0.5 * frame, 44], [60 + 0.5 * frame, 44]
    return pts.astype(np.float32)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    scores = []
    for rank, (vid, (subset, n, invalid)) in enumerate(VIDEOS.items(), start=1):
        clip = ramp_video(root / f"{vid}_clip.mp4", n, size=(W, H))
        valid = np.array([k not in invalid for k in range(n)])
        points = np.stack([shape(k) for k in range(n)])
        points[~valid] = np.nan
        boxes = np.tile(np.float32([20, 20, 76, 80]), (n, 1))
        export_wflw_v(root / "wflw_v", vid, boxes, points, clip, valid, np.linspace(0.1, 0.2, n))
        scores.append({"video_id": vid, "status": "ok", "uncertainty": 1.0 / rank, "n_frames": n, "rank": rank,
                       "subset": subset, "valid_share": float(valid.mean())})
    write_rows(scores, "scores", root / "scores.parquet")
    write_split(root / "wflw_v", root / "scores.parquet")
    return root / "wflw_v"


def test_frames_in_any_order_are_the_right_frames(export):
    data = WFLWVideo(export, "easy")
    assert len(data) == 11  # frame 5 is not valid
    item = data[0]
    assert item["image"].shape == (H, W, 3) and item["image"].dtype == np.uint8
    assert item["landmarks"].shape == (98, 2) and item["box"].tolist() == [20, 20, 76, 80]
    assert item["valid"] is True and item["video_id"] == "e1" and item["uncertainty"] == pytest.approx(0.1)
    hard = WFLWVideo(export, "hard")
    order = [39, 0, 20, 21, 5, 38, 1, 30]  # backwards, far ahead, next
    for i in order:
        got = hard[i]
        assert frame_index(got["image"]) == got["frame"] == i
        np.testing.assert_array_equal(got["landmarks"], shape(i))
    assert [d["frame"] for d in (data[i] for i in range(len(data)))] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]


def test_clips_lie_inside_valid_runs(export):
    clips = WFLWVideo(export, "easy", clip_len=4)
    assert [(c["frame"], c["image"].shape) for c in (clips[i] for i in range(len(clips)))] == [
        (0, (4, H, W, 3)), (6, (4, H, W, 3))]  # runs 0-4 and 6-11, no overlap
    second = clips[1]
    assert [frame_index(f) for f in second["image"]] == [6, 7, 8, 9]
    assert second["valid"].tolist() == [True] * 4 and second["landmarks"].shape == (4, 98, 2)
    assert len(WFLWVideo(export, "easy", clip_len=4, clip_stride=1)) == 2 + 3
    assert len(WFLWVideo(export, "easy", valid_only=False)) == 12


def test_dataloader_workers_read_the_same_items(export):
    data = WFLWVideo(export, "all")
    data[len(data) - 1]  # the parent has open decoders now: a forked worker must not share them
    ids = lambda batches: [(v, int(f)) for b in batches for v, f in zip(b["video_id"], b["frame"])]  # noqa: E731
    alone = list(DataLoader(data, batch_size=8, num_workers=0))
    workers = list(DataLoader(data, batch_size=8, num_workers=2))
    assert ids(workers) == ids(alone) and len(ids(alone)) == 40 + 11
    for a, b in zip(alone, workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["landmarks"], b["landmarks"])


def test_one_ldeq_training_step_from_the_dataset(export, tmp_path):
    cfg = get_config("tiny", batch_size=4, epochs=1)
    data = WFLWVideo(export, "easy", transform=LDEQInput(cfg))
    image, target = data[0]
    assert image.shape == (3, 64, 64) and target.shape == (98, 2)
    assert 0.0 < float(target.min()) and float(target.max()) < 1.0  # the face lies inside its crop
    torch.manual_seed(0)
    model = LDEQ(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train(model, data, cfg, tmp_path, max_steps=1)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed and (tmp_path / "checkpoint.pt").is_file()


def test_bad_folders_are_one_line_errors(export, tmp_path):
    with pytest.raises(LayoutError, match=r"hard_video_IDs.txt: split list not found"):
        WFLWVideo(tmp_path, "hard")
    with pytest.raises(LayoutError, match="subset 'medium'"):
        WFLWVideo(export, "medium")
    with pytest.raises(ValueError, match="clip_len 0"):
        WFLWVideo(export, "easy", clip_len=0)


def test_ldeq_imports_nothing_from_the_pipeline():
    code = ("import sys, ldeq.datasets, ldeq.evaluate, ldeq.layout; "
            "print([m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
