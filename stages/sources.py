"""Stage `sources`: validate a source list (project CSV or official WFLW-V text) into the sources manifest.

Project files behind ``file:`` URLs are hashed into the manifest, so editing one re-runs the download: DVC watches
``sources.media`` (the folder holding them) as a dependency of this stage, and a re-hash costs a stat per unchanged
file.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.cli import run_stage, setup_logging, stage_parser
from pipeline.manifest import write_rows
from pipeline.params import stage_params
from pipeline.runcache import cache_root, file_digest
from pipeline.sources import SourceListError, local_file, read_id_lists, read_source_list

log = logging.getLogger("stages.sources")


def _local(url: str) -> Path | None:
    """The project file behind a ``file:`` URL; None for web URLs and for paths outside the project (the download
    stage reports those rows)."""
    try:
        return local_file(url, Path.cwd())
    except ValueError:
        return None


def _content_sha256(url: str, cache: Path) -> str | None:
    """SHA-256 of the project file behind a ``file:`` URL (remembered by size and mtime), None otherwise or if missing:
    the download stage then reports the row."""
    path = _local(url)
    if path is None or not path.is_file():
        return None
    return file_digest(path, cache)


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
    cache = cache_root(stage_params("cache", args.params).dir)
    media = Path(p.media).resolve()
    outside = [r.url for r in rows if (f := _local(r.url)) is not None and not f.is_relative_to(media)]
    if outside:
        log.warning("%d file: URL(s) point outside sources.media (%s), e.g. %s: DVC does not see edits to those "
                    "files; set sources.media to the folder that holds them", len(outside), p.media, outside[0])
    write_rows(({**asdict(r), "content_sha256": _content_sha256(r.url, cache)} for r in rows), "sources", args.out)
    log.info("sources: %d videos from %s (%d rows rejected)", len(rows), p.list, len(problems))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
