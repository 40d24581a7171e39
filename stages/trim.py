"""Stage `trim`: cut each downloaded video to its frame window (by decoded index) into the clips manifest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.acquire.files import remove_stale
from pipeline.acquire.trim import trim_clip
from pipeline.cli import project_relative, run_stage, setup_logging, skipped_row, split_timings, stage_parser, summarize
from pipeline.cluster import map_videos
from pipeline.manifest import ManifestError, read_table, write_rows
from pipeline.params import stage_params

log = logging.getLogger("stages.trim")


def _trim(item: dict[str, Any], out_dir: Path, params: Any) -> dict[str, Any]:
    return trim_clip(item["video_id"], item["path"], item["start_frame"], item["end_frame"], out_dir, params)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--downloads", default="manifests/downloads.parquet")
    parser.add_argument("--media", default="data/clips")
    parser.add_argument("--out", default="manifests/clips.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("trim", args.params)
    windows = {r["video_id"]: r for r in read_table(args.sources, "sources").to_pylist()}
    downloads = read_table(args.downloads, "downloads").to_pylist()
    strangers = sorted({d["video_id"] for d in downloads} - set(windows))
    if strangers:
        raise ManifestError(f"{args.downloads}: {len(strangers)} video(s) not in {args.sources} (e.g. "
                            f"{strangers[0]!r}): the manifests come from different source lists; rerun the download")
    todo, rows = [], []
    for d in downloads:
        w = windows[d["video_id"]]
        if d["status"] == "ok":
            todo.append({"video_id": d["video_id"], "path": d["path"], "start_frame": w["start_frame"],
                         "end_frame": w["end_frame"]})
        else:
            rows.append(skipped_row(d["video_id"], "download", d["status"], d["error"],
                                    start_frame=w["start_frame"], end_frame=w["end_frame"]))
    for leftover in remove_stale(Path(args.media)):  # hidden temp mp4s of a killed run
        log.info("removed leftover %s", leftover)
    rows += map_videos(_trim, todo, stage_params("cluster", args.params),
                       on_error=lambda i, e: {"video_id": i["video_id"], "status": "error", "error": repr(e)},
                       out_dir=Path(args.media).resolve(), params=params)
    rows = split_timings("trim", sorted(rows, key=lambda r: r["video_id"]))
    write_rows(project_relative(rows), "clips", args.out)
    summarize("trim", rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
