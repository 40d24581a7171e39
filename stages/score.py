"""Stage `score`: consensus labels, per-frame validity and uncertainty, a score per video, the hard/easy selection.

Reads the landmarks and faces manifests one video at a time (both are written in video order), so memory does not
grow with the dataset; only the per-video score rows are held for the selection.
"""

from __future__ import annotations

import sys

from pipeline.cli import run_stage, setup_logging, skipped_row, stage_parser, summarize
from pipeline.manifest import iter_joined, read_table, write_rows
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
    statuses = {s["video_id"]: s for s in read_table(args.label_status, "video_status").to_pylist()}
    labelled = {vid for vid, s in statuses.items() if s["status"] == "ok"}
    empty = schema("landmarks").empty_table()
    # every video the label stage finished gets a row, also one whose frames were all unlabelled (no valid box)
    rows = []
    for vid, (landmarks, faces) in iter_joined((args.landmarks, "landmarks"), (args.faces, "faces")):
        if vid not in labelled:
            continue
        labelled.discard(vid)
        if faces is None:  # one inconsistent video must not stop the stage
            rows.append({"video_id": vid, "status": "error", "error": "labelled, but no rows in the faces manifest"})
            continue
        rows.append(video_score(vid, video_labels(landmarks if landmarks is not None else empty, p, faces), p))
    rows += [{"video_id": vid, "status": "error", "error": "labelled, but no rows in the faces manifest"}
             for vid in sorted(labelled)]
    rows += [skipped_row(s["video_id"], "label", s["status"], s["error"]) for s in statuses.values()
             if s["status"] != "ok"]
    rows = select_subsets(rows, p.n_hard)
    write_rows(sorted(rows, key=lambda r: (r.get("rank") or 10**9, r["video_id"])), "scores", args.out)
    summarize("score", rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
