"""Stage `score`: per-video pseudo-label uncertainty (cross-model disagreement) and the hard/easy selection."""

from __future__ import annotations

import sys

from pipeline.cli import run_stage, setup_logging, skipped_row, stage_parser, summarize
from pipeline.manifest import read_table, rows_by_video, write_rows
from pipeline.params import stage_params
from pipeline.uncertainty import frame_consensus, select_subsets, video_score


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--landmarks", default="manifests/landmarks.parquet")
    parser.add_argument("--label-status", default="manifests/label_status.parquet")
    parser.add_argument("--out", default="manifests/scores.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    p = stage_params("score", args.params)
    rows = [video_score(vid, frame_consensus(t), p.min_models)
            for vid, t in rows_by_video(read_table(args.landmarks, "landmarks")).items()]
    rows += [skipped_row(s["video_id"], "label", s["status"], s["error"])
             for s in read_table(args.label_status, "video_status").to_pylist() if s["status"] != "ok"]
    rows = select_subsets(rows, p.n_hard)
    write_rows(sorted(rows, key=lambda r: (r.get("rank") or 10**9, r["video_id"])), "scores", args.out)
    summarize("score", rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
