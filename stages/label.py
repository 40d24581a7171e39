"""Stage `label`: run every available landmark model on the main face of every frame (pseudo-labels)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pipeline.cli import setup_logging, skipped_row, stage_parser, summarize
from pipeline.cluster import map_videos
from pipeline.landmarks.label import available_models, label_video
from pipeline.manifest import read_table, rows_by_video, write_rows
from pipeline.params import stage_params

log = logging.getLogger("stages.label")


def _label(item: dict[str, Any], models: list[str]) -> dict[str, Any]:
    return label_video(item["video_id"], item["path"], item["boxes"], models)


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
    boxes = {vid: [[r["x1"], r["y1"], r["x2"], r["y2"]] for r in t.to_pylist()]
             for vid, t in rows_by_video(read_table(args.faces, "faces")).items()}
    todo = [{"video_id": v, "path": paths[v], "boxes": b} for v, b in boxes.items()]
    statuses = [dict(skipped_row(s["video_id"], "faces", s["status"], s["error"]), stage="label")
                for s in read_table(args.faces_status, "video_status").to_pylist() if s["status"] != "ok"]
    results = map_videos(_label, todo, stage_params("cluster", args.params),
                         on_error=lambda i, e: {"status": {"stage": "label", "video_id": i["video_id"],
                                                           "status": "error", "error": repr(e)}, "rows": []},
                         models=models)
    statuses += [r["status"] for r in results]
    write_rows([row for r in results for row in r["rows"]], "landmarks", args.out)
    write_rows(sorted(statuses, key=lambda r: r["video_id"]), "video_status", args.status_out)
    summarize("label", statuses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
