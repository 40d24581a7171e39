"""What every stage entry point shares: argument parsing, logging, and status bookkeeping."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.cluster import map_videos
from pipeline.manifest import write_rows
from pipeline.params import ClusterParams

__all__ = ["stage_parser", "setup_logging", "summarize", "skipped_row", "run_frame_stage", "project_relative"]


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes (``--params``, ``--log-level``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


def setup_logging(level: str = "INFO") -> None:
    """Plain timestamped logging to stderr; dask's chatter is kept at WARNING."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "bokeh", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def summarize(stage: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """One line of status counts, e.g. ``trim: 24 ok, 1 bad_window``; logged by each stage."""
    counts = Counter(r["status"] for r in rows)
    text = f"{stage}: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()) if counts else f"{stage}: no videos"
    logging.getLogger("stages").info(text)
    return text


def project_relative(rows: list[dict[str, Any]], key: str = "path") -> list[dict[str, Any]]:
    """Store media paths relative to the project root (the working directory of every stage), so manifests stay
    valid when the project folder moves and do not differ between clones."""
    root = Path.cwd().resolve()
    for row in rows:
        if row.get(key):
            path = Path(row[key]).resolve()
            row[key] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return rows


def skipped_row(video_id: str, upstream: str, status: str, error: str | None, **extra: Any) -> dict[str, Any]:
    """The row a stage writes for a video that failed upstream: status ``skipped`` and the upstream reason."""
    return {"video_id": video_id, "status": "skipped", "error": f"{upstream} {status}: {error}", **extra}


def run_frame_stage(stage: str, fn: Callable[..., dict[str, Any]], todo: list[dict[str, Any]],
                    skipped: list[dict[str, Any]], cluster: ClusterParams, manifest: str, out: str | Path,
                    status_out: str | Path, **kwargs: Any) -> None:
    """Run a per-video stage whose tasks return ``{"status": row, "rows": per-frame rows}``.

    Writes the per-frame manifest and the stage's ``video_status`` manifest (``skipped`` rows for videos that
    failed upstream included) and logs the status counts.
    """

    def on_error(item: dict[str, Any], err: BaseException) -> dict[str, Any]:
        return {"status": {"stage": stage, "video_id": item["video_id"], "status": "error", "error": repr(err)},
                "rows": []}

    results = map_videos(fn, todo, cluster, on_error=on_error, **kwargs)
    statuses = [dict(row, stage=stage) for row in skipped] + [r["status"] for r in results]
    write_rows([row for r in results for row in r["rows"]], manifest, out)
    write_rows(sorted(statuses, key=lambda r: r["video_id"]), "video_status", status_out)
    summarize(stage, statuses)
