"""Stage `report`: one HTML page (and a JSON summary) of the run: failures, subsets with renders and contact sheets,
the labels against people's corrections (the run's landmark truth) and against the demo's model reference (model
output, not truth), LDEQ results, with their figures."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.manifest import atomic_path, write_json
from pipeline.params import stage_params
from pipeline.report import ReportInputs, build_report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--manifests", default="manifests")
    parser.add_argument("--metrics", default="metrics")
    parser.add_argument("--plots", default="plots", help="the train and evaluate stages' plot tables (CSV)")
    parser.add_argument("--demo-truth", default="data/demo/truth.parquet",
                        help="the demo's exact boxes and levels and its landmarks' model reference")
    parser.add_argument("--out", default="report")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = ReportInputs(Path(args.manifests), Path(args.metrics), Path(args.plots), Path(args.demo_truth))
    page, summary = build_report(inputs, out, stage_params("report", args.params), stage_params("score", args.params),
                                 stage_params("cluster", args.params))
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_json(out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
