"""Stage `faces`: detect faces in every clip frame, track the main face, write per-frame boxes."""

from __future__ import annotations

import sys
from typing import Any

from pipeline.cli import run_frame_stage, run_stage, setup_logging, skipped_row, stage_parser
from pipeline.faces.process import track_main_face
from pipeline.manifest import read_table
from pipeline.params import stage_params


def _track(clip: dict[str, Any], params: Any) -> dict[str, Any]:
    return track_main_face(clip["video_id"], clip["path"], params)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--out", default="manifests/faces.parquet")
    parser.add_argument("--status-out", default="manifests/faces_status.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    clips = read_table(args.clips, "clips").to_pylist()
    todo = [c for c in clips if c["status"] == "ok"]
    skipped = [skipped_row(c["video_id"], "trim", c["status"], c["error"]) for c in clips if c["status"] != "ok"]
    run_frame_stage("faces", _track, todo, skipped, stage_params("cluster", args.params), "faces", args.out,
                    args.status_out, params=stage_params("faces", args.params))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
