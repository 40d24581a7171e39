"""Stage `annotate`: final WFLW-98 labels per frame of every selected video, plus the official WFLW-V export."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.annotations import video_annotations
from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.export import export_wflw_v, write_split
from pipeline.manifest import read_table, rows_by_video, write_rows
from pipeline.params import stage_params

log = logging.getLogger("stages.annotate")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--landmarks", default="manifests/landmarks.parquet")
    parser.add_argument("--faces", default="manifests/faces.parquet")
    parser.add_argument("--scores", default="manifests/scores.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--out", default="manifests/annotations.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    export_dir = Path(stage_params("annotate", args.params).export_dir)
    score = stage_params("score", args.params)
    subsets = {r["video_id"]: r["subset"] for r in read_table(args.scores, "scores").to_pylist() if r["subset"]}
    clips = {r["video_id"]: r["path"] for r in read_table(args.clips, "clips").to_pylist()}
    landmarks = rows_by_video(read_table(args.landmarks, "landmarks"))
    faces = rows_by_video(read_table(args.faces, "faces"))
    rows, failed, invalid = [], 0, 0
    for video_id, subset in sorted(subsets.items()):
        try:
            result = video_annotations(video_id, subset, landmarks[video_id], faces[video_id], score)
            export_wflw_v(export_dir, video_id, result["boxes"], result["points"], Path(clips[video_id]),
                          result["valid"])
        except (ValueError, KeyError, OSError) as err:
            log.error("annotate: %s skipped: %s", video_id, err)
            failed += 1
            continue
        rows += result["rows"]
        invalid += int((~result["valid"]).sum())
    write_rows(rows, "annotations", args.out)
    log.info("annotate: %d videos (%d frames, %d flagged invalid) written, %d failed; export in %s",
             len(subsets) - failed, len(rows), invalid, failed, export_dir)
    split = write_split(export_dir, args.scores)  # the hard/easy lists beside the export, as the official release
    log.info("annotate: split lists: %d hard, %d easy", len(split["hard"]), len(split["easy"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
