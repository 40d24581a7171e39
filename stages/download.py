"""Stage `download`: fetch every source video with yt-dlp (resumable) into the downloads manifest."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.acquire.download import download_video
from pipeline.cli import project_relative, run_stage, setup_logging, split_timings, stage_parser, summarize
from pipeline.cluster import map_videos
from pipeline.manifest import read_table, write_rows
from pipeline.params import stage_params
from pipeline.sources import SourceRow


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--media", default="data/downloads", help="folder for downloaded videos (persistent)")
    parser.add_argument("--out", default="manifests/downloads.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("download", args.params)
    sources = [SourceRow(**r) for r in read_table(args.sources, "sources").to_pylist()]
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
