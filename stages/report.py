"""Stage `report`: one HTML page (and a JSON summary) of the run: failures, subsets, label quality, LDEQ results."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.manifest import atomic_path, write_json
from pipeline.report import build_report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--manifests", default="manifests")
    parser.add_argument("--metrics", default="metrics")
    parser.add_argument("--demo-truth", default="data/demo/truth.parquet")
    parser.add_argument("--out", default="report")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    page, summary = build_report(Path(args.manifests), Path(args.metrics), Path(args.demo_truth))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_json(out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
