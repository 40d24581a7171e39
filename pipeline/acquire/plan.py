"""The download stage's dry run: validate the source list and say what a real run would do, without network."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.acquire.download import record_matches, store_slot
from pipeline.params import DownloadParams, SourcesParams
from pipeline.sources import SourceRow, read_id_lists, read_source_list

__all__ = ["Assumptions", "plan_downloads"]


@dataclass(frozen=True)
class Assumptions:
    """What the estimates assume; the real values are known only after downloading."""

    fps: float = 30.0  # WFLW-V sources are mostly 25–30 fps
    mbit_s: float = 2.5  # H.264 720p as YouTube serves it (roughly 1.5–3 Mbit/s)
    gop_s: float = 5.0  # longest keyframe interval: the pre-roll a seek may decode
    clip_kb_per_frame: float = 60.0  # libx264 at CRF 12, 720p


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:,.1f} GB"


def plan_downloads(sources: SourcesParams, params: DownloadParams, media: Path,
                   assume: Assumptions = Assumptions()) -> tuple[list[str], bool]:
    """Return the report lines and whether a real run could start (the list is valid under ``sources.strict``)."""
    subsets = read_id_lists(sources.easy_ids, sources.hard_ids)
    rows, problems = read_source_list(sources.list, subsets, sources.allow_file_urls, sources.limit)
    lines = ["dry run: no network, nothing written",
             f"source list: {sources.list}: {len(rows)} valid rows, {len(problems)} rejected"
             f"{'' if sources.limit is None else f' (sources.limit {sources.limit})'}"]
    lines += [f"  rejected: {p}" for p in problems[:20]]
    ok = not (problems and sources.strict)
    if not ok:
        lines.append("  the sources stage would stop here (sources.strict: true)")
    if not rows:
        return lines + ["nothing to download"], ok
    done = sum(_already_done(r, params, media) for r in rows)
    schemes = Counter(urlparse(r.url).scheme for r in rows)
    refused = sum(1 for r in rows if urlparse(r.url).scheme == "file" and not params.allow_file_urls)
    subset_counts = Counter(r.official_subset or "none" for r in rows)
    lengths = [r.end_frame - r.start_frame + 1 for r in rows]
    window_frames = sum(lengths)
    through_end = sum(r.end_frame + 1 for r in rows)
    preroll = len(rows) * round(assume.gop_s * assume.fps)
    seconds_min = through_end / assume.fps
    lines += [
        f"videos: {len(rows)} ({', '.join(f'{n} {s}' for s, n in sorted(subset_counts.items()))}); "
        f"{len(rows) - done} to download, {done} already in {media} with a matching (url, format) record",
        f"  URL schemes: {', '.join(f'{n} {s}' for s, n in schemes.most_common())}"
        f"{f'; {refused} file URL(s) would be refused (download.allow_file_urls: false)' if refused else ''}",
        f"frames: {window_frames:,} in the windows ({min(lengths)}..{max(lengths)} per clip); "
        f"windows end at frame {max(r.end_frame for r in rows):,} at the latest",
        f"  decoding with seeks: at most {window_frames + preroll:,} frames (windows + one {assume.gop_s:g} s GOP "
        f"of pre-roll each); decoding each source from frame 0 would take {through_end:,}",
        f"disk: downloads at least {_gb(seconds_min * assume.mbit_s * 1e6 / 8)} (the sources up to each window's "
        f"end at {assume.mbit_s:g} Mbit/s, {assume.fps:g} fps; whole videos are longer), at most "
        f"{_gb(len(rows) * params.max_bytes)} ({len(rows)} × download.max_bytes)",
        f"  clips: about {_gb(window_frames * assume.clip_kb_per_frame * 1e3)} "
        f"({assume.clip_kb_per_frame:g} kB per frame)",
        f"time: per-video cap {params.max_seconds:g} s (download.max_seconds), {params.retries} retries, "
        f"pacing {params.sleep_interval:g}–{params.max_sleep_interval:g} s per video "
        f"(≥ {len(rows) * params.sleep_interval / 60:,.0f} min in total on one worker)",
        f"licence filter: {'off' if params.licenses is None else ', '.join(params.licenses)}; format: {params.format}",
    ]
    return lines, ok


def _already_done(row: SourceRow, params: DownloadParams, media: Path) -> bool:
    """Whether the download store holds a finished download of this (url, format) (the real run would reuse it, web
    sources at least: a project file is also checked against its content then)."""
    slot = store_slot(media, row, params)
    try:
        record = json.loads((slot / f"{row.video_id}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("status") == "ok" and record_matches(record, row, params)
            and (slot / str(record.get("path", ""))).is_file())
