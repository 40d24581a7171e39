"""Stage `label`: run every available landmark model on the main face of every frame with a valid face box."""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from pipeline.cli import run_frame_stage, run_stage, setup_logging, skipped_row, stage_parser
from pipeline.landmarks.label import available_models, label_video
from pipeline.manifest import boxes_array, read_table, rows_by_video
from pipeline.params import stage_params

log = logging.getLogger("stages.label")


def _label(item: dict[str, Any], models: list[str]) -> dict[str, Any]:
    return label_video(item["video_id"], item["path"], item["boxes"], models, item["valid"], item["rolls"])


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--faces", default="manifests/faces.parquet")
    parser.add_argument("--faces-status", default="manifests/faces_status.parquet")
    parser.add_argument("--out", default="manifests/landmarks.parquet")
    parser.add_argument("--status-out", default="manifests/label_status.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    models, missing = available_models(stage_params("label", args.params).models)
    for name, reason in missing.items():
        log.warning("landmark model %s is unavailable, going on without it: %s", name, reason)
    if not models:
        log.error("no landmark model is available; run `make models` (python -m pipeline.models_store fetch)")
        return 2
    log.info("labelling with %s", ", ".join(models))
    paths = {c["video_id"]: c["path"] for c in read_table(args.clips, "clips").to_pylist()}
    todo = []
    for vid, t in rows_by_video(read_table(args.faces, "faces")).items():
        # frames without a valid box (source "none", or held past a track end) are not labelled at all
        todo.append({"video_id": vid, "path": paths[vid], "boxes": boxes_array(t),
                     "valid": np.asarray(t.column("valid").to_numpy(zero_copy_only=False), bool),
                     "rolls": np.asarray(t.column("roll").to_numpy(zero_copy_only=False), np.float64)})
    skipped = [skipped_row(s["video_id"], "faces", s["status"], s["error"])
               for s in read_table(args.faces_status, "video_status").to_pylist() if s["status"] != "ok"]
    run_frame_stage("label", _label, todo, skipped, stage_params("cluster", args.params), "landmarks", args.out,
                    args.status_out, models=models)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
