"""Stage `sources`: validate a source list (project CSV or official WFLW-V text) into the sources manifest."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.manifest import write_rows
from pipeline.params import stage_params
from pipeline.sources import SourceListError, read_id_lists, read_source_list

log = logging.getLogger("stages.sources")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", default="manifests/sources.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    p = stage_params("sources", args.params)
    try:
        rows, problems = read_source_list(p.list, read_id_lists(p.easy_ids, p.hard_ids), p.allow_file_urls, p.limit)
    except SourceListError as err:
        log.error("%s", err)
        return 2
    if problems and p.strict:
        log.error("%s", SourceListError(problems))
        log.error("fix the rows above, or set sources.strict: false to drop them")
        return 2
    for problem in problems:
        log.warning("dropped: %s", problem)
    write_rows((asdict(r) for r in rows), "sources", args.out)
    log.info("sources: %d videos from %s (%d rows rejected)", len(rows), p.list, len(problems))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
