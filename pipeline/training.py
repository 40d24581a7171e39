"""Train LDEQ on a built dataset: crops of the easy subset's annotated frames (cut per video on dask), optionally
with WFLW stills, then :func:`ldeq.train.train` (resumable) and the stage's metrics and loss plot.

With ``models.determinism: exact`` (the default) training runs under :func:`ldeq.infer.exact_cpu_kernels` (one
thread, ATen's convolutions through MKL's reproducible GEMM, deterministic algorithms); the data order is drawn from
the seed and the epoch either way: the same annotations give the same checkpoint on every x86-64 machine."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq.config import LDEQConfig, get_config
from ldeq.data import video_crops
from ldeq.infer import exact_cpu_kernels
from ldeq.model import LDEQ
from ldeq.train import Augment, LandmarkCrops, train
from ldeq.wflw_data import WFLWImages
from pipeline.cluster import map_videos
from pipeline.kernels import model_determinism
from pipeline.manifest import (
    ManifestError,
    atomic_path,
    boxes_array,
    points_array,
    read_table,
    rows_by_video,
    write_json,
)
from pipeline.params import ClusterParams, TrainParams
from pipeline.schemas import error_status, valid_flags

__all__ = ["training_config", "train_on_dataset"]

log = logging.getLogger(__name__)


def training_config(params: TrainParams) -> LDEQConfig:
    """The LDEQ profile named in params, with its overrides and seed."""
    return get_config(params.profile, **dict(params.overrides)).replace(seed=params.seed)


def _cut(item: dict[str, Any], size: int, scale: float, out_dir: Path) -> dict[str, Any]:
    """Crop one video's selected frames (the model's crop convention) into ``out_dir/<video_id>.npz``."""
    images, points = video_crops(item["path"], item["boxes"], item["points"], item["frames"], size, scale)
    target = out_dir / f"{item['video_id']}.npz"
    with atomic_path(target) as tmp, tmp.open("wb") as fh:
        np.savez(fh, images=images, points=points)
    return {"video_id": item["video_id"], "status": "ok", "path": str(target), "n": len(images)}


def _easy_videos(annotations: Path, clips: Path, stride: int) -> list[dict[str, Any]]:
    """Every ``stride``-th annotated frame of each easy video, with its box and landmarks (valid frames only)."""
    paths = {r["video_id"]: r["path"] for r in read_table(clips, "clips").to_pylist()}
    todo = []
    for vid, rows in rows_by_video(read_table(annotations, "annotations")).items():
        if rows.column("subset")[0].as_py() != "easy":
            continue
        keep = np.arange(0, len(rows), stride)
        keep = keep[valid_flags(rows)[keep]]  # invalid frames carry no trustworthy label (no face box, or no agreement)
        if keep.size == 0:
            continue
        todo.append({"video_id": vid, "path": paths[vid], "boxes": boxes_array(rows)[keep],
                     "frames": np.asarray(rows.column("frame").to_numpy())[keep].tolist(),
                     "points": points_array(rows.column("landmarks"))[keep]})
    return todo


def train_on_dataset(annotations: str | Path, clips: str | Path, params: TrainParams, cluster: ClusterParams,
                     out_dir: str | Path, crops_dir: str | Path, metrics_path: str | Path,
                     plot_path: str | Path) -> dict[str, Any]:
    """Train (or resume) LDEQ on the easy subset of a built dataset; write the checkpoint folder, metrics and plot.

    The checkpoint folder ``out_dir`` gets ``config.json`` (crop convention included) and ``checkpoint.pt``
    (:mod:`ldeq.checkpoint`). Training resumes only when the fingerprint (config, videos, crop count, WFLW list)
    matches. Raises :class:`~pipeline.manifest.ManifestError` when the dataset has no easy video. Returns the metrics.
    """
    cfg = training_config(params)
    todo = _easy_videos(Path(annotations), Path(clips), params.frame_stride)
    if not todo:
        raise ManifestError(f"{annotations}: no easy-subset video: nothing to train on")
    shards = map_videos(_cut, todo, cluster,
                        on_error=lambda i, e: error_status(i["video_id"], e),
                        size=cfg.input_size, scale=cfg.crop_scale, out_dir=Path(crops_dir).resolve())
    for s in shards:
        if s["status"] != "ok":
            log.error("train: cropping %s failed: %s", s["video_id"], s.get("error"))
    loaded = [np.load(s["path"]) for s in shards if s["status"] == "ok"]
    if not loaded:
        raise ManifestError(f"{annotations}: no easy-subset video could be cropped: nothing to train on")
    images = np.concatenate([d["images"] for d in loaded])
    points = np.concatenate([d["points"] for d in loaded])
    fingerprint = hashlib.sha256(
        json.dumps([cfg.__dict__, sorted(s["video_id"] for s in shards), images.shape], default=str).encode()
    ).hexdigest()
    data: LandmarkCrops | torch.utils.data.ConcatDataset = LandmarkCrops(images, points, Augment(), seed=cfg.seed,
                                                                          mean=cfg.mean, std=cfg.std)
    if params.wflw_annotations:
        wflw = WFLWImages(params.wflw_annotations, params.wflw_images or ".", cfg.input_size, Augment(),
                          seed=cfg.seed, mean=cfg.mean, std=cfg.std)
        log.info("adding %d WFLW training images from %s", len(wflw), params.wflw_annotations)
        data = torch.utils.data.ConcatDataset([wflw, data])
        fingerprint = hashlib.sha256((fingerprint + str(Path(params.wflw_annotations).resolve())).encode()).hexdigest()
    # exact: the same checkpoint from the same annotations on every x86-64 machine, whatever its core count or
    # vendor, at about 2.5x oneDNN's time per step (benchmarks/README.md, determinism); fast: oneDNN, all cores
    with exact_cpu_kernels() if model_determinism() == "exact" else nullcontext():
        torch.manual_seed(cfg.seed)
        model = LDEQ(cfg)
        n_params = int(sum(t.numel() for t in model.parameters()))
        log.info("training LDEQ (%s, %.2f M params) on %d crops (%d from %d videos)", params.profile, n_params / 1e6,
                 len(data), len(images), len(loaded))
        history = train(model, data, cfg, out_dir, fingerprint=fingerprint)
    with atomic_path(plot_path) as tmp:
        tmp.write_text("epoch,loss\n" + "".join(f"{h['epoch']},{h['loss']:.6f}\n" for h in history))
    # key names shared with the other metrics files ("videos"): DVC shows every file's keys as one table's columns
    metrics = {"final_loss": history[-1]["loss"], "epochs": len(history), "images": len(data),
               "videos": len(loaded), "parameters": n_params}
    write_json(metrics_path, metrics)
    return metrics
