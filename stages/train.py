"""Stage `train`: train LDEQ on still frames of the easy subset (crops cut per video on dask, then trained here)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq.config import get_config
from ldeq.data import video_crops
from ldeq.model import LDEQ
from ldeq.train import Augment, LandmarkCrops, train
from ldeq.wflw_data import WFLWImages
from pipeline.cli import setup_logging, stage_parser
from pipeline.cluster import map_videos
from pipeline.manifest import atomic_path, boxes_array, points_array, read_table, rows_by_video, write_json
from pipeline.params import stage_params

log = logging.getLogger("stages.train")


def _cut(item: dict[str, Any], size: int, out_dir: Path) -> dict[str, Any]:
    images, points = video_crops(item["path"], item["boxes"], item["points"], item["frames"], size)
    target = out_dir / f"{item['video_id']}.npz"
    with atomic_path(target) as tmp, tmp.open("wb") as fh:
        np.savez(fh, images=images, points=points)
    return {"video_id": item["video_id"], "status": "ok", "path": str(target), "n": len(images)}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--annotations", default="manifests/annotations.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--crops", default="data/train_crops")
    parser.add_argument("--out", default="models/ldeq")
    parser.add_argument("--metrics", default="metrics/train.json")
    parser.add_argument("--plot", default="plots/train_loss.csv")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    p = stage_params("train", args.params)
    cfg = get_config(p.profile, **dict(p.overrides)).replace(seed=p.seed)
    clips = {r["video_id"]: r["path"] for r in read_table(args.clips, "clips").to_pylist()}
    todo = []
    for vid, rows in rows_by_video(read_table(args.annotations, "annotations")).items():
        if rows.column("subset")[0].as_py() != "easy":
            continue
        keep = np.arange(0, len(rows), p.frame_stride)
        boxes = boxes_array(rows)[keep]
        frames = np.asarray(rows.column("frame").to_numpy())[keep].tolist()
        todo.append({"video_id": vid, "path": clips[vid], "boxes": boxes, "frames": frames,
                     "points": points_array(rows.column("landmarks"))[keep]})
    if not todo:
        log.error("no easy-subset video in %s: nothing to train on", args.annotations)
        return 2
    shards = map_videos(_cut, todo, stage_params("cluster", args.params),
                        on_error=lambda i, e: {"video_id": i["video_id"], "status": "error", "error": repr(e)},
                        size=cfg.input_size, out_dir=Path(args.crops).resolve())
    loaded = [np.load(s["path"]) for s in shards if s["status"] == "ok"]
    images = np.concatenate([d["images"] for d in loaded])
    points = np.concatenate([d["points"] for d in loaded])
    fingerprint = hashlib.sha256(
        json.dumps([cfg.__dict__, sorted(s["video_id"] for s in shards), images.shape], default=str).encode()
    ).hexdigest()
    data: torch.utils.data.Dataset = LandmarkCrops(images, points, Augment(), seed=cfg.seed)
    if p.wflw_annotations:
        wflw = WFLWImages(p.wflw_annotations, p.wflw_images or ".", cfg.input_size, Augment(), seed=cfg.seed)
        log.info("adding %d WFLW training images from %s", len(wflw), p.wflw_annotations)
        data = torch.utils.data.ConcatDataset([wflw, data])
        fingerprint = hashlib.sha256((fingerprint + str(Path(p.wflw_annotations).resolve())).encode()).hexdigest()
    torch.manual_seed(cfg.seed)
    model = LDEQ(cfg)
    log.info("training LDEQ (%s, %.2f M params) on %d crops (%d from %d videos)", p.profile,
             sum(t.numel() for t in model.parameters()) / 1e6, len(data), len(images), len(loaded))
    history = train(model, data, cfg, args.out, fingerprint=fingerprint)
    with atomic_path(args.plot) as tmp:
        tmp.write_text("epoch,loss\n" + "".join(f"{h['epoch']},{h['loss']:.6f}\n" for h in history))
    write_json(args.metrics, {"final_loss": history[-1]["loss"], "epochs": len(history), "train_images": len(data),
                              "train_videos": len(loaded),
                              "parameters": int(sum(t.numel() for t in model.parameters()))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
