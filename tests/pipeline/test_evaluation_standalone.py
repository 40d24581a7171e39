"""The evaluate stage's results carry the standalone evaluator's table (``ldeq.evaluate``: the same functions), and it
agrees with the stage's own figures on the same predictions and frames."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.evaluation import evaluate_checkpoint
from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS, ClusterParams, EvaluateParams, load
from pipeline.video import VideoWriter
from tests.ldeq.released_reference import official_shapes, official_state_dict, released_args

N = 6


@pytest.fixture(scope="module")
def results(tmp_path_factory, astronaut):
    root = tmp_path_factory.mktemp("standalone")
    rng = np.random.default_rng(1)
    base = rng.uniform([180, 80], [280, 190], (98, 2))
    base[60], base[72] = [195, 120], [265, 120]
    clips, rows = [], []
    for k, (vid, subset) in enumerate((("e", "easy"), ("h", "hard"))):
        path = root / f"{vid}.mp4"
        with VideoWriter(path, fps=25) as out:
            for t in range(N):
                out.write(cv2.warpAffine(astronaut, np.float32([[1, 0, 2 * t + k], [0, 1, -t]]), (512, 512)))
        clips.append({"video_id": vid, "status": "ok", "path": str(path), "n_frames": N, "fps": 25.0, "width": 512,
                      "height": 512})
        for t in range(N):
            shift = np.array([2 * t + k, -t])
            rows.append({"video_id": vid, "frame": t, "subset": subset, "x1": 170.0 + shift[0], "y1": 60.0 + shift[1],
                         "x2": 290.0 + shift[0], "y2": 200.0 + shift[1],
                         "landmarks": (base + shift + rng.normal(0, 1.5, (98, 2))).tolist(), "n_models": 2})
    write_rows(clips, "clips", root / "clips.parquet")
    write_rows(rows, "annotations", root / "annotations.parquet")
    ckpt = root / "final.pth.tar"
    torch.save({"state_dict": official_state_dict(official_shapes(98, 16, 8), seed=4, scale=0.2),
                "args": released_args(16, 8, solver="fpi", max_iters=3, tol=5e-4, beta=0.4, im_size=64,
                                      heatmap_size=16)}, ckpt)
    raw = load(PROJECT_PARAMS)
    params = EvaluateParams.model_validate({**raw["evaluate"], "checkpoint": str(ckpt), "tune_videos": 1,
                                            "max_videos": None, "rwr_gammas": [0.0]})
    cluster = ClusterParams.model_validate({**raw["cluster"], "n_workers": 1, "threads_per_worker": 1})
    return evaluate_checkpoint(root / "annotations.parquet", root / "clips.parquet", params, cluster, root / "none",
                               root / "evaluate.json", root / "ced.csv", root / "per_video.csv")


def test_the_standalone_table_matches_the_stages_figures(results):
    table = results["standalone"]
    assert set(table) == {"easy", "hard"} and set(table["hard"]) == {"scratch", "rwr", "rwr_prox"}
    for subset, stage_name in (("hard", "none"), ("easy", "none")):
        mine, stage = table[subset]["scratch"], results["subsets"][subset][stage_name]
        assert (mine["videos"], mine["frames"]) == (1, N)
        assert mine["nme_io"] == pytest.approx(stage["nme"], rel=1e-9)
        assert mine["nmf"] == pytest.approx(stage["nmf"], rel=1e-9)
    hard = table["hard"]["scratch"]
    image = results["image_hard"]["scratch"]
    assert (hard["fr10"], hard["auc10"]) == (pytest.approx(image["fr10"]), pytest.approx(image["auc10"]))
    assert hard["nme_io"] == pytest.approx(image["nme"], rel=1e-9)  # one video: frame mean = video mean
    taus = [p["tau"] for p in hard["nad"]]
    assert taus == [1, 2]  # 6 frames hold two means of 2, not of 4
    assert all(math.isfinite(p["nad"]) and p["videos"] == 1 for p in hard["nad"])
    assert hard["nme_face"] > 0 and table["hard"]["rwr"]["nme_io"] == pytest.approx(results["subsets"]["hard"]["rwr"]
                                                                                     ["nme"], rel=1e-9)
