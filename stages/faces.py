"""Stage `faces`: detect faces in every clip frame, track the main face, write per-frame boxes."""

from __future__ import annotations

import sys
from typing import Any

from pipeline.cli import setup_logging, skipped_row, stage_parser, summarize
from pipeline.cluster import map_videos
from pipeline.faces.process import track_main_face
from pipeline.manifest import read_table, write_rows
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
    statuses = [dict(skipped_row(c["video_id"], "trim", c["status"], c["error"]), stage="faces")
                for c in clips if c["status"] != "ok"]
    results = map_videos(_track, todo, stage_params("cluster", args.params),
                         on_error=lambda c, e: {"status": {"stage": "faces", "video_id": c["video_id"],
                                                           "status": "error", "error": repr(e)}, "rows": []},
                         params=stage_params("faces", args.params))
    statuses += [r["status"] for r in results]
    write_rows([row for r in results for row in r["rows"]], "faces", args.out)
    write_rows(sorted(statuses, key=lambda r: r["video_id"]), "video_status", args.status_out)
    summarize("faces", statuses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
