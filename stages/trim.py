"""Stage `trim`: cut each downloaded video to its frame window (by decoded index) into the clips manifest.

Per video through the run cache: a clip is cut again only when the downloaded file's content, the window, the trim
params or the code changed; reused clips are linked into ``--media`` from the cache.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.acquire.files import remove_stale
from pipeline.acquire.trim import trim_clip
from pipeline.cli import StageOutputs, VideoTask, run_cached_stage, run_stage, setup_logging, skipped_row, stage_parser
from pipeline.manifest import ManifestError, read_table
from pipeline.params import stage_params
from pipeline.runcache import StageCache, cache_root, file_digest

log = logging.getLogger("stages.trim")


def _trim(item: dict[str, Any], work_dir: Path, params: Any) -> dict[str, Any]:
    row = trim_clip(item["video_id"], item["path"], item["start_frame"], item["end_frame"], work_dir, params)
    return {"status": row, "rows": None}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--downloads", default="manifests/downloads.parquet")
    parser.add_argument("--media", default="data/clips", help="folder for the clips")
    parser.add_argument("--out", default="manifests/clips.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("trim", args.params)
    cache = StageCache.for_stage(cache_root(stage_params("cache", args.params).dir), "trim", params)
    windows = {r["video_id"]: r for r in read_table(args.sources, "sources").to_pylist()}
    downloads = read_table(args.downloads, "downloads").to_pylist()
    strangers = sorted({d["video_id"] for d in downloads} - set(windows))
    if strangers:
        raise ManifestError(f"{args.downloads}: {len(strangers)} video(s) not in {args.sources} (e.g. "
                            f"{strangers[0]!r}): the manifests come from different source lists; rerun the download")
    tasks, skipped = [], []
    for d in downloads:
        w = windows[d["video_id"]]
        if d["status"] == "ok":
            item = {"video_id": d["video_id"], "path": d["path"], "start_frame": w["start_frame"],
                    "end_frame": w["end_frame"]}
            inputs = {"media": file_digest(d["path"], cache.root), "window": [w["start_frame"], w["end_frame"]]}
            tasks.append(VideoTask(d["video_id"], item, inputs))
        else:
            skipped.append(skipped_row(d["video_id"], "download", d["status"], d["error"],
                                       start_frame=w["start_frame"], end_frame=w["end_frame"]))
    for leftover in remove_stale(Path(args.media)):  # hidden temp files of a killed run
        log.info("removed leftover %s", leftover)
    outputs = StageOutputs("clips", Path(args.out), media_out=Path(args.media))
    run_cached_stage("trim", _trim, tasks, skipped, stage_params("cluster", args.params), cache, outputs,
                     params=params)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
