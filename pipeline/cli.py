"""What every stage entry point shares: argument parsing, logging, and status bookkeeping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.cluster import map_videos
from pipeline.manifest import ManifestError, atomic_path, float_provenance, write_rows
from pipeline.params import ClusterParams, ParamsError, load_params

__all__ = ["stage_parser", "setup_logging", "summarize", "skipped_row", "run_frame_stage", "project_relative",
           "run_stage", "split_timings", "TIMINGS_DIR"]

#: Per-video wall times go here (untracked), not into the DVC-tracked manifests: they differ on every run, and a
#: tracked output that changes on every run would make ``dvc.lock`` (and ``git status``) dirty after each repro.
TIMINGS_DIR = Path("logs") / "timings"


def run_stage(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a stage's ``main``; bad params, manifests or missing inputs end in one ``error:`` line and exit 2."""
    try:
        return main(argv)
    except (ParamsError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
    except FileNotFoundError as err:
        print(f"error: {err.filename}: {err.strerror}", file=sys.stderr)
    return 2


def split_timings(stage: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Move each row's ``seconds`` into ``logs/timings/<stage>.csv`` (untracked) and return the rows without it."""
    lines = []
    for row in rows:
        seconds = row.pop("seconds", None)
        if seconds is not None:
            lines.append(f"{row['video_id']},{seconds}\n")
    if lines:
        with atomic_path(TIMINGS_DIR / f"{stage}.csv") as tmp:
            tmp.write_text("video_id,seconds\n" + "".join(sorted(lines)), encoding="utf-8")
    return rows


class _StageParser(argparse.ArgumentParser):
    """Validates the whole params file right after parsing, so bad params are reported before any work starts."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        load_params(parsed.params)
        return parsed


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes (``--params``, ``--log-level``)."""
    parser = _StageParser(description=description)
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
    statuses = split_timings(stage, [dict(row, stage=stage) for row in skipped] + [r["status"] for r in results])
    # per-frame rows come from float models: record what produced them (see float_provenance)
    write_rows([row for r in results for row in r["rows"]], manifest, out, metadata=float_provenance())
    write_rows(sorted(statuses, key=lambda r: r["video_id"]), "video_status", status_out)
    summarize(stage, statuses)
