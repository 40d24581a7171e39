"""Stage `demo`: build the embedded demo's source videos, source list and ground truth from real face media."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.cli import OutputError, run_stage, setup_logging, stage_parser
from pipeline.demo.build import OutsideProject, build_demo
from pipeline.params import stage_params


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", default="data/demo", help="output folder (raw/, sources.csv, truth.parquet)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        summary = build_demo(Path(args.out), stage_params("demo", args.params), root=Path.cwd())
    except OutsideProject as err:
        raise OutputError(str(err)) from None
    logging.getLogger("stages").info("demo: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
