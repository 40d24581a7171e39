"""Stage `label`: run every available landmark model on the main face of every frame with a valid face box.

Per video through the run cache: a video is labelled again only when its clip, its faces rows, the model list, the
label params or the code changed. Workers read their video's faces rows themselves; the client holds one video's
rows at a time.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import StageOutputs, VideoTask, run_cached_stage, run_stage, setup_logging, skipped_row, stage_parser
from pipeline.landmarks.label import SelfChecks, available_models, label_video
from pipeline.manifest import ManifestError, boxes_array, float_provenance, iter_videos, read_table, read_video
from pipeline.params import stage_params
from pipeline.runcache import StageCache, cache_root, file_digest, table_digest

log = logging.getLogger("stages.label")


def _label(item: dict[str, Any], work_dir: Path, faces: str, models: list[str], checks: SelfChecks) -> dict[str, Any]:
    t = read_video(faces, "faces", item["video_id"])
    # frames without a valid box (source "none", or held past a track end) are not labelled at all
    return label_video(item["video_id"], item["path"], boxes_array(t), models,
                       np.asarray(t.column("valid").to_numpy(zero_copy_only=False), bool),
                       np.asarray(t.column("roll").to_numpy(zero_copy_only=False), np.float64), checks=checks)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--faces", default="manifests/faces.parquet")
    parser.add_argument("--faces-status", default="manifests/faces_status.parquet")
    parser.add_argument("--out", default="manifests/landmarks.parquet")
    parser.add_argument("--status-out", default="manifests/label_status.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("label", args.params)
    models, missing = available_models(params.models)
    for name, reason in missing.items():
        log.warning("landmark model %s is unavailable, going on without it: %s", name, reason)
    if not models:
        log.error("no landmark model is available; run `make models` (python -m pipeline.models_store fetch)")
        return 2
    log.info("labelling with %s", ", ".join(models))
    cache = StageCache.for_stage(cache_root(stage_params("cache", args.params).dir), "label", params)
    clips = read_table(args.clips, "clips", columns=["video_id", "path"])
    paths = dict(zip(clips.column("video_id").to_pylist(), clips.column("path").to_pylist(), strict=True))
    tasks = []
    for vid, rows in iter_videos(args.faces, "faces"):
        if vid not in paths:
            raise ManifestError(f"{args.faces}: video {vid!r} is not in {args.clips}: the manifests come from "
                                "different runs; rerun the faces stage")
        inputs = {"clip": file_digest(paths[vid], cache.root), "faces": table_digest(rows), "models": models}
        tasks.append(VideoTask(vid, {"video_id": vid, "path": paths[vid]}, inputs))
    skipped = [skipped_row(s["video_id"], "faces", s["status"], s["error"])
               for s in read_table(args.faces_status, "video_status").to_pylist() if s["status"] != "ok"]
    outputs = StageOutputs("video_status", Path(args.status_out), "landmarks", Path(args.out))
    run_cached_stage("label", _label, tasks, skipped, stage_params("cluster", args.params), cache, outputs,
                     frames_metadata=float_provenance(), faces=str(Path(args.faces).resolve()), models=models,
                     checks=SelfChecks(params.mirror_check, params.jitter_boxes, dict(params.tta)))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
