"""Stage `score`: consensus labels, per-frame validity and uncertainty, a score per video, the hard/easy selection."""

from __future__ import annotations

import sys

from pipeline.cli import run_stage, setup_logging, skipped_row, stage_parser, summarize
from pipeline.manifest import read_table, rows_by_video, write_rows
from pipeline.params import stage_params
from pipeline.schemas import schema
from pipeline.uncertainty import select_subsets, video_labels, video_score


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--landmarks", default="manifests/landmarks.parquet")
    parser.add_argument("--faces", default="manifests/faces.parquet")
    parser.add_argument("--label-status", default="manifests/label_status.parquet")
    parser.add_argument("--out", default="manifests/scores.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    p = stage_params("score", args.params)
    landmarks = rows_by_video(read_table(args.landmarks, "landmarks"))
    faces = rows_by_video(read_table(args.faces, "faces"))
    statuses = read_table(args.label_status, "video_status").to_pylist()
    empty = schema("landmarks").empty_table()
    # every video the label stage finished gets a row, also one whose frames were all unlabelled (no valid box)
    rows = []
    for s in statuses:
        if s["status"] != "ok":
            continue
        vid = s["video_id"]
        if vid not in faces:  # one inconsistent video must not stop the stage
            rows.append({"video_id": vid, "status": "error", "error": "labelled, but no rows in the faces manifest"})
            continue
        rows.append(video_score(vid, video_labels(landmarks.get(vid, empty), p, faces[vid]), p))
    rows += [skipped_row(s["video_id"], "label", s["status"], s["error"]) for s in statuses if s["status"] != "ok"]
    rows = select_subsets(rows, p.n_hard)
    write_rows(sorted(rows, key=lambda r: (r.get("rank") or 10**9, r["video_id"])), "scores", args.out)
    summarize("score", rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
