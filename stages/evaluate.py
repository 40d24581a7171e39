"""Stage `evaluate`: an LDEQ checkpoint on every annotated video, from scratch and with RwR, plus EMA and One-Euro
baselines tuned on the easy split (see :mod:`pipeline.evaluation`).

The checkpoint is ``evaluate.checkpoint`` in params (a checkpoint folder or a released ``final.pth.tar``), or the
train stage's ``--model`` folder when that is null.
"""

from __future__ import annotations

import sys

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.evaluation import evaluate_checkpoint
from pipeline.params import stage_params


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--annotations", default="manifests/annotations.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--model", default="models/ldeq", help="checkpoint used when evaluate.checkpoint is null")
    parser.add_argument("--metrics", default="metrics/evaluate.json")
    parser.add_argument("--ced", default="plots/ced.csv")
    parser.add_argument("--per-video", default="plots/nmf_per_video.csv")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    evaluate_checkpoint(args.annotations, args.clips, stage_params("evaluate", args.params),
                        stage_params("cluster", args.params), args.model, args.metrics, args.ced, args.per_video)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
