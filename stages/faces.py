"""Stage `faces`: detect faces in every clip frame, track the main face, write per-frame boxes.

Per video through the run cache: a clip is tracked again only when its content, the faces params or the code changed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline.cli import StageOutputs, VideoTask, run_cached_stage, run_stage, setup_logging, skipped_row, stage_parser
from pipeline.faces.process import track_main_face
from pipeline.landmarks.adapters import create_landmark_model
from pipeline.manifest import float_provenance, read_table
from pipeline.params import stage_params
from pipeline.runcache import StageCache, cache_root, file_digest


def _track(clip: dict[str, Any], work_dir: Path, params: Any) -> dict[str, Any]:
    # the follower's landmark model comes from the landmarks package: faces itself does not import it
    return track_main_face(clip["video_id"], clip["path"], params, create_landmark_model)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--out", default="manifests/faces.parquet")
    parser.add_argument("--status-out", default="manifests/faces_status.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("faces", args.params)
    cache = StageCache.for_stage(cache_root(stage_params("cache", args.params).dir), "faces", params)
    clips = read_table(args.clips, "clips", columns=["video_id", "status", "error", "path"]).to_pylist()
    tasks = [VideoTask(c["video_id"], {"video_id": c["video_id"], "path": c["path"]},
                       {"clip": file_digest(c["path"], cache.root)}) for c in clips if c["status"] == "ok"]
    skipped = [skipped_row(c["video_id"], "trim", c["status"], c["error"]) for c in clips if c["status"] != "ok"]
    outputs = StageOutputs("video_status", Path(args.status_out), "faces", Path(args.out))
    run_cached_stage("faces", _track, tasks, skipped, stage_params("cluster", args.params), cache, outputs,
                     frames_metadata=float_provenance(), params=params)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
