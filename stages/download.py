"""Stage `download`: fetch every source video with yt-dlp (resumable) into the downloads manifest.

``--dry-run`` validates the source list named by the ``sources`` params and prints the planned work (videos,
frames, disk) without touching the network or writing anything.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.acquire.download import download_video
from pipeline.acquire.files import remove_stale
from pipeline.acquire.plan import plan_downloads
from pipeline.cli import project_relative, run_stage, setup_logging, split_timings, stage_parser, summarize
from pipeline.cluster import map_videos
from pipeline.manifest import read_table, write_rows
from pipeline.params import stage_params
from pipeline.sources import SourceListError, SourceRow

log = logging.getLogger("stages.download")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--media", default="data/downloads", help="folder for downloaded videos (persistent)")
    parser.add_argument("--out", default="manifests/downloads.parquet")
    parser.add_argument("--dry-run", action="store_true", help="validate the list and print the plan; no network")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("download", args.params)
    if args.dry_run:
        try:
            lines, ok = plan_downloads(stage_params("sources", args.params), params, Path(args.media))
        except SourceListError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0 if ok else 2
    sources = [SourceRow(**r) for r in read_table(args.sources, "sources").to_pylist()]
    for leftover in remove_stale(Path(args.media)):  # a killed run's partial files must never look finished
        log.info("removed leftover %s", leftover)
    rows = map_videos(
        download_video, sources, stage_params("cluster", args.params),
        on_error=lambda s, e: {"video_id": s.video_id, "url": s.url, "status": "error", "error": repr(e)},
        out_dir=Path(args.media).resolve(), params=params, root=Path.cwd(),
    )
    write_rows(project_relative(split_timings("download", rows)), "downloads", args.out)
    summarize("download", rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
