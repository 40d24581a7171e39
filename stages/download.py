"""Stage `download`: fetch every source video with yt-dlp into the download store, and link the current list's
videos into ``--media``.

The store (``<cache.dir>/downloads``, outside every tracked output) keeps each video with a record of what its source
was; a video is reused while its source is unchanged (``download.source_check``) and fetched again otherwise. The
tracked ``--media`` folder holds exactly the videos of the current list: rows that leave the list stay in the store,
and come back without a download if the row returns.

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
from pipeline.acquire.retry import OUTCOMES, change_lines, plan_retries, record_outcomes
from pipeline.cli import (
    check_outputs,
    project_relative,
    run_stage,
    setup_logging,
    stage_parser,
    summarize,
    write_timings,
)
from pipeline.cluster import imap_videos
from pipeline.manifest import read_table, write_rows
from pipeline.params import stage_params
from pipeline.runcache import cache_root, link_media
from pipeline.schemas import error_status
from pipeline.sources import SourceListError, SourceRow

log = logging.getLogger("stages.download")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--media", default="data/downloads", help="folder for the current list's videos")
    parser.add_argument("--out", default="manifests/downloads.parquet")
    parser.add_argument("--dry-run", action="store_true", help="validate the list and print the plan; no network")
    parser.add_argument("--retry-failed", action="store_true",
                        help="attempt again only the sources whose last failure was transient (network, rate limit, "
                             "server error, timeout, truncated): download.retry = failed for this run")
    parser.add_argument("--retry", nargs="+", default=[], metavar="ID",
                        help="attempt these sources whatever their last failure (unavailable included)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    params = stage_params("download", args.params)
    cache = cache_root(stage_params("cache", args.params).dir)
    store = cache / "downloads"
    if args.dry_run:
        try:
            lines, ok = plan_downloads(stage_params("sources", args.params), params, store)
        except SourceListError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0 if ok else 2
    sources = [SourceRow(**r) for r in read_table(args.sources, "sources").to_pylist()]
    try:  # failed sources kept as they were, or attempted again (download.retry; pipeline/acquire/retry.py)
        plan = plan_retries(sources, cache, params, "failed" if args.retry_failed else None, args.retry)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    media = Path(args.media)
    check_outputs([args.out], [media, store, cache / OUTCOMES])
    for folder in (media, *store.glob("*/*")):  # the output, and each stored version's folder
        for leftover in remove_stale(folder):  # a killed run's partial files must never look finished
            log.info("removed leftover %s", leftover)
    rows, timings, notes = [], {}, {}

    def on_error(s: SourceRow, e: BaseException) -> dict[str, object]:
        return {**error_status(s.video_id, e), "url": s.url}

    for _, row in imap_videos(download_video, plan.attempt, stage_params("cluster", args.params), on_error=on_error,
                              store=store.resolve(), params=params, root=Path.cwd(), cache=cache.resolve()):
        seconds, note = row.pop("seconds", 0.0), row.pop("note", None)
        timings[row["video_id"]] = (seconds, note == "reused")
        if note and note.startswith("redownloaded"):
            notes[row["video_id"]] = note
        if row["status"] == "ok" and row.get("path"):
            link_media([Path(row["path"])], media)
            row["path"] = str(media / Path(row["path"]).name)
        rows.append(row)
    record_outcomes(rows, sources, cache, params)
    for line in change_lines(plan, rows) if plan.before or plan.kept else []:
        log.info("%s", line)
    rows += plan.kept
    rows.sort(key=lambda r: r["video_id"])
    write_rows(project_relative(rows), "downloads", args.out)
    write_timings("download", timings, notes)
    reused = sum(1 for _, was_reused in timings.values() if was_reused)
    log.info("%s (%d reused, %d fetched, %d of them because the source changed)",
             summarize("download", rows, log_it=False), reused, len(rows) - reused,
             sum(1 for n in notes.values() if "source changed" in n))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
