"""What every stage entry point shares: argument parsing, logging, and status bookkeeping."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["stage_parser", "setup_logging", "summarize", "skipped_row"]


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


def skipped_row(video_id: str, upstream: str, status: str, error: str | None, **extra: Any) -> dict[str, Any]:
    """The row a stage writes for a video that failed upstream: status ``skipped`` and the upstream reason."""
    return {"video_id": video_id, "status": "skipped", "error": f"{upstream} {status}: {error}", **extra}
