"""Evaluate any checkpoint on a built dataset: a released ``.pth.tar``, or the folder the train stage writes."""

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ldeq.checkpoint import load_checkpoint
from ldeq.infer import RwR, exact_cpu_kernels, predict_video
from ldeq.metrics import nmf, video_nme
from ldeq.video_eval import VideoScores
from pipeline.evaluation import bootstrap_intervals, evaluate_checkpoint
from pipeline.manifest import ManifestError, sha256_file, write_rows
from pipeline.params import PROJECT_PARAMS, ClusterParams, EvaluateParams, ParamsError, TrainParams, load
from pipeline.training import train_on_dataset
from pipeline.video import VideoWriter, iter_frames
from tests.ldeq.released_reference import official_shapes, official_state_dict, released_args

BLOCKS = {"evaluate": EvaluateParams, "cluster": ClusterParams, "train": TrainParams}


def block(name: str, **overrides):
    """One block of the project's params.yaml (validated alone, so unrelated blocks cannot break these tests)."""
    return BLOCKS[name].model_validate({**load(PROJECT_PARAMS)[name], **overrides})


SUBSETS = {"easy_a": "easy", "easy_b": "easy", "hard_a": "hard"}
N_FRAMES = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, astronaut):
    """Three short clips of the astronaut drifting, with boxes following the face and jittered landmarks."""
    root = tmp_path_factory.mktemp("built")
    clips, annotations = [], []
    rng = np.random.default_rng(0)
    base = rng.uniform([180, 80], [280, 190], (98, 2))
    base[60], base[72] = [195, 120], [265, 120]  # outer eye corners: a sane inter-ocular distance
    for k, (vid, subset) in enumerate(SUBSETS.items()):
        path = root / f"{vid}.mp4"
        with VideoWriter(path, fps=25) as out:
            for t in range(N_FRAMES):
                out.write(cv2.warpAffine(astronaut, np.float32([[1, 0, 2 * t + k], [0, 1, -t]]), (512, 512)))
        clips.append({"video_id": vid, "status": "ok", "path": str(path), "n_frames": N_FRAMES, "fps": 25.0,
                      "width": 512, "height": 512})
        for t in range(N_FRAMES):
            shift = np.array([2 * t + k, -t])
            points = base + shift + rng.normal(0, 1.5, (98, 2))
            annotations.append({"video_id": vid, "frame": t, "subset": subset, "x1": 170.0 + shift[0],
                                "y1": 60.0 + shift[1], "x2": 290.0 + shift[0], "y2": 200.0 + shift[1],
                                "landmarks": points.tolist(), "n_models": 2})
    write_rows(clips, "clips", root / "clips.parquet")
    write_rows(annotations, "annotations", root / "annotations.parquet")
    return root


def evaluate(dataset, out, **params):
    evaluate_params = block("evaluate", **{"tune_videos": 1, "max_videos": None, **params})
    cluster = block("cluster", scheduler=None, n_workers=1, threads_per_worker=1)
    out.mkdir(exist_ok=True)
    return evaluate_checkpoint(dataset / "annotations.parquet", dataset / "clips.parquet", evaluate_params, cluster,
                               out / "models" / "ldeq", out / "evaluate.json", out / "ced.csv", out / "per_video.csv")


def released_file(path, drop: str | None = None):
    state = official_state_dict(official_shapes(98, 16, 8), seed=4, scale=0.2)
    if drop:
        del state[drop]
    args = released_args(16, 8, solver="fpi", max_iters=5, tol=5e-4, beta=0.4, im_size=64, heatmap_size=16)
    torch.save({"state_dict": state, "args": args}, path)
    return path


def video(dataset, vid):
    """One video's decoded frames, boxes and ground truth, read back from the built dataset."""
    mine = [r for r in pq.read_table(dataset / "annotations.parquet").to_pylist() if r["video_id"] == vid]
    boxes = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in mine], np.float32)
    gt = np.array([r["landmarks"] for r in mine], np.float32)
    frames = [f.rgb for f in iter_frames(dataset / f"{vid}.mp4", 0, len(mine))]
    return frames, boxes, gt


def test_a_released_checkpoint_is_evaluated_with_the_released_protocol(dataset, tmp_path):
    ckpt = released_file(tmp_path / "final.pth.tar")
    metrics = evaluate(dataset, tmp_path, checkpoint=str(ckpt), rwr_iters=1, frame0_full_solve=False,
                       rwr_align=False)
    written = json.loads((tmp_path / "evaluate.json").read_text())
    assert written["subsets"] == metrics["subsets"] and written["checkpoint"] == metrics["checkpoint"]
    assert metrics["checkpoint"] == {"path": str(ckpt), "sha256": sha256_file(ckpt)}
    assert metrics["n_videos"] == {"evaluated": 3, "failed": 0}
    assert set(metrics["subsets"]["easy"]) == {"none", "ema", "one_euro", "rwr", "rwr_prox"}
    scalars = {str(f.relative_to(tmp_path / "evaluate")): json.loads(f.read_text())
               for f in (tmp_path / "evaluate").rglob("*.json")}  # the DVC metrics: a few keys per file
    assert len(scalars) == 5 + 7 and scalars["hard/rwr.json"] == {
        "nme": metrics["subsets"]["hard"]["rwr"]["nme"], "nmf": metrics["subsets"]["hard"]["rwr"]["nmf"], "videos": 1}
    model = load_checkpoint(ckpt)
    frames, boxes, gt = video(dataset, "hard_a")
    with exact_cpu_kernels():  # as on the workers: one thread, ATen's kernels, so sums add up in the same order
        scratch = predict_video(model, frames, boxes).points
        released_rwr = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=False, align=False,
                                                                    gamma=0.0)).points
    hard = metrics["subsets"]["hard"]
    assert hard["none"]["nme"] == video_nme(scratch, gt)  # exact kernels: the same bits in a worker and here
    assert hard["none"]["nmf"] == nmf(scratch, gt)
    assert hard["rwr"]["nme"] == video_nme(released_rwr, gt)
    assert hard["rwr"]["nmf"] == nmf(released_rwr, gt)
    calls = metrics["rwr_cost"]["calls_per_frame"]
    assert calls["rwr"] == 2.0 and 2.0 < calls["scratch"] <= 6.0  # 1 + 1 per frame vs up to 5 + 1
    lines = (tmp_path / "per_video.csv").read_text().splitlines()
    assert lines[0] == "video_id,subset,method,nme,nmf" and len(lines) == 1 + 2 * 5 + 7


def test_the_train_stages_folder_is_the_default_checkpoint(dataset, tmp_path):
    """...trained the same whatever the caller's thread count, and evaluated with an interval for every figure."""
    train = block("train", profile="tiny", overrides={}, frame_stride=2,
                         wflw_annotations=None, wflw_images=None)
    cluster = block("cluster", scheduler=None, n_workers=1, threads_per_worker=1)
    digests, threads = [], torch.get_num_threads()
    try:
        for n, out in ((2, tmp_path / "two_threads"), (1, tmp_path / "models" / "ldeq")):
            torch.set_num_threads(n)
            trained = train_on_dataset(dataset / "annotations.parquet", dataset / "clips.parquet", train, cluster,
                                       out, tmp_path / "crops", tmp_path / "train.json", tmp_path / "loss.csv")
            digests.append(sha256_file(out / "checkpoint.pt"))
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[1]  # exact kernels: one thread whatever the machine's core count
    assert trained["videos"] == 2 and trained["images"] == 2 * 3  # easy videos, every 2nd frame
    assert json.loads((out / "config.json").read_text())["crop_scale"] == 1.2
    metrics = evaluate(dataset, tmp_path, checkpoint=None)
    assert metrics["checkpoint"] == {"path": str(out), "sha256": sha256_file(out / "checkpoint.pt")}
    assert metrics["n_videos"]["evaluated"] == 3
    assert metrics["confidence_intervals"]["resamples"] == 1000
    for subset in metrics["subsets"].values():
        for values in subset.values():
            for key in ("nme", "nmf", "nmf_vs_none", "nme_vs_none"):
                lo, hi = values[f"{key}_ci"]
                assert lo <= values[key] + 1e-9 and values[key] <= hi + 1e-9, (key, values)
    for values in metrics["image_hard"].values():
        assert values["nme_ci"][0] <= values["nme"] <= values["nme_ci"][1] and len(values["auc10_ci"]) == 2


def test_a_checkpoint_that_does_not_fit_is_one_params_error(dataset, tmp_path):
    ckpt = released_file(tmp_path / "final.pth.tar", drop="deq_layer.cell.head.conv.weight")
    with pytest.raises(ParamsError) as err:
        evaluate(dataset, tmp_path, checkpoint=str(ckpt))
    assert str(err.value) == (f"evaluate.checkpoint: {ckpt}: key 'deq_layer.cell.head.conv.weight' missing from "
                              "the checkpoint")
    with pytest.raises(FileNotFoundError):
        evaluate(dataset, tmp_path, checkpoint=str(tmp_path / "nowhere.pth.tar"))


def test_training_without_an_easy_video_is_one_manifest_error(dataset, tmp_path):
    hard_only = tmp_path / "annotations.parquet"
    rows = [r for r in pq.read_table(dataset / "annotations.parquet").to_pylist() if r["subset"] == "hard"]
    write_rows(rows, "annotations", hard_only)
    train = block("train", profile="tiny")
    with pytest.raises(ManifestError, match="no easy-subset video"):
        train_on_dataset(hard_only, dataset / "clips.parquet", train, block("cluster"),
                         tmp_path / "m", tmp_path / "c", tmp_path / "t.json", tmp_path / "l.csv")


def test_bootstrap_intervals_are_paired_over_videos_and_reproducible():
    rng = np.random.default_rng(3)
    none = rng.uniform(1.0, 3.0, 12)
    scores = [VideoScores(f"v{i:02d}", "none", 5.0, float(f)) for i, f in enumerate(none)]
    scores += [VideoScores(f"v{i:02d}", "halved", 5.0, float(f / 2)) for i, f in enumerate(none)]
    scores += [VideoScores(f"v{i:02d}", "noisy", 5.0, float(f * rng.uniform(0.7, 1.3))) for i, f in enumerate(none)]
    intervals = bootstrap_intervals(scores)
    assert intervals == bootstrap_intervals(list(reversed(scores)))  # drawn from the fixed seed, whatever the order
    assert intervals["halved"]["nmf_vs_none_ci"] == pytest.approx([0.5, 0.5])  # the same videos in every draw
    lo, hi = intervals["noisy"]["nmf_vs_none_ci"]
    assert lo < 1 < hi  # a gain this noisy over 12 videos is not shown
    lo, hi = intervals["none"]["nmf_ci"]
    assert lo < none.mean() < hi and intervals["none"]["nme_ci"] == [5.0, 5.0]
