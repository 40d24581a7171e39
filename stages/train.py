"""Stage `train`: train LDEQ on still frames of the easy subset (crops cut per video on dask, then trained here)."""

from __future__ import annotations

import sys

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.params import stage_params
from pipeline.training import train_on_dataset


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--annotations", default="manifests/annotations.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--crops", default="data/train_crops")
    parser.add_argument("--out", default="models/ldeq")
    parser.add_argument("--metrics", default="metrics/train.json")
    parser.add_argument("--plot", default="plots/train_loss.csv")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    train_on_dataset(args.annotations, args.clips, stage_params("train", args.params),
                     stage_params("cluster", args.params), args.out, args.crops, args.metrics, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
