"""Look at a run from the terminal: ``python -m pipeline.inspect <summary|render|why> --help``.

* ``summary``: the run in a few lines (videos per status, subsets, the labels against people's corrections and
  their distance to the demo's model reference, LDEQ with and without RwR, where the report is); with manifest
  paths, each manifest's row counts by status, subset, model, licence and the like.
* ``render VIDEO_ID``: one video (or a frame range, ``--frames 10-40``) drawn with its box, every model's points,
  the consensus, validity and uncertainty.
* ``why VIDEO_ID``: one video's state per stage, its scores, and why it is (or is not) hard.

A mistyped id, path or option is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.manifest import ManifestError
from pipeline.params import ParamsError, ScoreParams, stage_params
from pipeline.render import RENDER_SUFFIXES, frame_uncertainty, load_overlay, read_video_rows, render_video
from pipeline.report import STAGE_MANIFESTS, ReportInputs, run_summary, summary_lines
from pipeline.uncertainty import COMPONENTS

__all__ = ["main", "manifest_summary", "explain_video", "parse_frames"]

#: Columns whose value counts say something about a manifest (the first that exist are shown).
COUNT_COLUMNS = ("stage", "status", "subset", "official_subset", "model", "family", "licence", "license",
                 "detector", "source", "box_source", "label_source", "valid", "decode_mode", "scenario",
                 "difficulty")


def manifest_summary(path: Path, top: int = 12) -> list[str]:
    """Lines describing any manifest file: its kind, rows, videos, and value counts of the telling columns."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
        present = [c for c in COUNT_COLUMNS if c in pq.read_schema(path).names]
        df = pd.read_parquet(path, columns=["video_id", *present] if "video_id" in pq.read_schema(path).names
                             else present)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported in one line naming it
        raise ManifestError(f"{path}: not a readable Parquet manifest: {str(err).splitlines()[0]}") from None
    name = meta.get("manifest", "unknown (no manifest metadata)")
    videos = f", {df.video_id.nunique()} videos" if "video_id" in df else ""
    lines = [f"{path}: {name} manifest, {len(df)} rows{videos}"]
    for column in present:
        counts = df[column].astype("string").fillna("<null>").value_counts()
        shown = ", ".join(f"{n} {v}" for v, n in counts.head(top).items())
        more = f", ... ({len(counts) - top} more)" if len(counts) > top else ""
        per = " (rows)" if "frame" in pq.read_schema(path).names else ""
        lines.append(f"  by {column}{per}: {shown}{more}")
    return lines


_STAGE_KINDS = {"downloads": "downloads", "clips": "clips", "faces_status": "video_status",
                "label_status": "video_status", "scores": "scores"}


def _stage_rows(video_id: str, manifests: Path) -> list[tuple[str, dict | None]]:
    """``(stage, row)`` per stage in chain order; the row is ``{}`` when the video is not in that stage's manifest and
    ``None`` when the manifest does not exist."""
    out: list[tuple[str, dict | None]] = []
    for stage, stem in STAGE_MANIFESTS:
        rows = read_video_rows(manifests / f"{stem}.parquet", _STAGE_KINDS[stem], video_id,
                               ["video_id", "status", "error"])
        out.append((stage, None if rows is None else (rows.to_pylist() or [{}])[0]))
    return out


def _unknown_video(video_id: str, manifests: Path, stages: list[tuple[str, dict | None]]) -> ManifestError:
    """The one-line error for an id no stage manifest knows, with the closest known ids as a suggestion."""
    if all(row is None for _, row in stages):
        return ManifestError(f"{manifests}: no stage manifest (downloads, clips, ... scores) found; run `dvc repro`")
    known: set[str] = set()
    for _, stem in STAGE_MANIFESTS:
        path = manifests / f"{stem}.parquet"
        if path.is_file():
            known.update(str(v) for v in pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist())
    close = difflib.get_close_matches(video_id, sorted(known), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else f" ({len(known)} videos known)"
    return ManifestError(f"{manifests}: no video {video_id!r} in any stage manifest{hint}")


def _root_failure(stages: list[tuple[str, dict | None]]) -> tuple[str, str] | None:
    """``(stage, status)`` of the first stage that failed by itself (neither ok nor skipped), if any."""
    for stage, row in stages:
        if row and row.get("status") not in ("ok", "skipped"):
            return stage, str(row["status"])
    return None


def _stage_lines(stages: list[tuple[str, dict | None]]) -> list[str]:
    """One line per stage with its real state; a skip caused by a failure listed above names that failure instead of
    repeating its message (each downstream stage nests the upstream error once more)."""
    lines = []
    for i, (stage, row) in enumerate(stages):
        if row is None:
            state = "(no manifest: stage not run)"
        elif not row:
            state = "(not in its manifest: written before this video was listed?)"
        elif row["status"] == "ok":
            state = "ok"
        else:
            cause = _root_failure(stages[:i]) if row["status"] == "skipped" else None
            state = (f"skipped after {cause[0]} {cause[1]} (above)" if cause
                     else f"{row['status']}: {row['error']}" if row.get("error") else str(row["status"]))
        lines.append(f"  {stage:<9} {state}")
    return lines


def explain_video(video_id: str, manifests: Path, params: ScoreParams) -> list[str]:
    """Lines on one video: state per stage, rank and subset against the thresholds, the score's components against
    the scored videos' medians (the largest excess is why it ranks where it does), validity, worst frames.

    Raises :class:`ManifestError` (one line) when no stage manifest knows ``video_id``.
    """
    stages = _stage_rows(video_id, manifests)
    if not any(row for _, row in stages):
        raise _unknown_video(video_id, manifests, stages)
    lines = [video_id, *_stage_lines(stages)]
    path = manifests / "scores.parquet"
    if not path.is_file():
        return lines + [f"  no scores: {path} is missing (run the score stage)"]
    scores = pd.read_parquet(path)
    mine = scores[scores.video_id == video_id]
    if mine.empty:
        return lines + [f"  not scored: no row in {path} (rerun the score stage)"]
    row = mine.iloc[0].to_dict()
    ok = scores[scores.status == "ok"]
    if row["status"] != "ok":
        cause = _root_failure(stages)
        why = f"{cause[0]} {cause[1]}" if cause else str(row["status"])
        lines.append(f"  not ranked: only videos scored ok are ranked ({why}, above)")
        if row.get("frame_valid") is None:
            return lines
        return lines + [_valid_line(np.asarray(row["frame_valid"], bool))]
    hard, easy = ok[ok.subset == "hard"], ok[ok.subset == "easy"]
    subset = row["subset"] if isinstance(row["subset"], str) else "in between (neither hard nor easy)"
    rules = []
    if not hard.empty:
        rules.append(f"hard: rank <= {int(hard['rank'].max())}, uncertainty >= {hard.uncertainty.min():.4f}")
    if not easy.empty:
        rules.append(f"easy: uncertainty <= {easy.uncertainty.max():.4f}")
    lines.append(f"  rank {int(row['rank'])} of {len(ok)} scored -> {subset}" + (f" ({'; '.join(rules)})"
                                                                              if rules else ""))
    weights: dict[str, float] = {str(k): v for k, v in params.weights.items()}
    terms = {"disagreement": row["disagreement"], "instability": row["instability"],
             "confidence": 1 - row["confidence"], "valid_share": 1 - row["valid_share"]}
    medians = {"disagreement": ok.disagreement.median(), "instability": ok.instability.median(),
               "confidence": 1 - ok.confidence.median(), "valid_share": 1 - ok.valid_share.median()}
    used = [k for k in COMPONENTS if weights.get(k, 0.0)]
    label = {"confidence": "(1 - confidence)", "valid_share": "(1 - valid share)"}
    lines.append(f"  uncertainty {row['uncertainty']:.4f} = " + " + ".join(
        f"{weights[k]:g} x {label.get(k, k)} {terms[k]:.4f}" for k in used))
    excess = {k: weights[k] * (terms[k] - medians[k]) for k in used if np.isfinite(terms[k])}
    if excess:
        compared = ", ".join(f"{label.get(k, k)} {medians[k]:.4f}" for k in used)
        driver = max(excess, key=excess.__getitem__)
        verdict = (f"mostly {label.get(driver, driver)} ({excess[driver]:+.4f} over the median)"
                   if excess[driver] > 0 else "every component at or below the median")
        lines.append(f"  scored videos' medians: {compared} -> {verdict}")
    lines.append(_valid_line(np.asarray(row["frame_valid"], bool)))
    u = frame_uncertainty(row, params)
    scored = np.flatnonzero(np.isfinite(u))
    worst = scored[np.argsort(-u[scored], kind="stable")][:5]
    if worst.size:
        lines.append("  most uncertain frames: " + ", ".join(f"{k} ({u[k]:.3f})" for k in worst))
    return lines + _label_source_lines(video_id, manifests)


def _label_source_lines(video_id: str, manifests: Path) -> list[str]:
    """How many of the video's annotated frames a person corrected, got a correction carried over, or are pseudo."""
    path = manifests / "annotations.parquet"
    if not path.is_file() or "label_source" not in pq.read_schema(path).names:
        return []
    ann = read_video_rows(path, "annotations", video_id, ["frame", "label_source"])
    if ann is None or len(ann) == 0:
        return []
    sources = np.asarray([s or "pseudo" for s in ann.column("label_source").to_pylist()])
    frames = np.asarray(ann.column("frame").to_numpy())
    human = frames[sources == "human"]
    return [f"  labels: {len(human)} human, {int((sources == 'propagated').sum())} propagated, "
            f"{int((sources == 'pseudo').sum())} pseudo, {int((sources == 'bridged').sum())} bridged frames"
            + (f"; corrected: {_ranges(human)}" if human.size else "")]


def _valid_line(valid: np.ndarray) -> str:
    bad = np.flatnonzero(~valid)
    share = f" ({valid.mean():.0%})" if valid.size else ""
    return f"  valid frames: {int(valid.sum())} of {len(valid)}{share}" + (f"; invalid: {_ranges(bad)}" if bad.size
                                                                          else "")


def _ranges(frames: np.ndarray) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"``."""
    runs, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            runs.append(f"{start}" if start == f else f"{start}-{f}")
            start = None
    return ", ".join(runs)


class _Parser(argparse.ArgumentParser):
    """argparse that answers a usage mistake with one line (and exit status 2) like every other error here."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_frames(spec: str, n_frames: int) -> list[int]:
    """``"10-40,55"`` → the clip frames 10..40 and 55 (0-based, inclusive ranges, as ``why`` prints them), checked
    against the clip's ``n_frames``; a malformed or out-of-range spec is a one-line ``ValueError``."""
    frames: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"--frames {spec}: {part!r} is not a frame (N) or an inclusive range (N-M) of frames >= 0")
        a, b = int(first), int(last or first)
        if a > b:
            raise ValueError(f"--frames {spec}: range {part} runs backwards")
        if b >= n_frames:
            raise ValueError(f"--frames {spec}: frame {b} is past the clip's last frame {n_frames - 1}")
        frames.update(range(a, b + 1))
    return sorted(frames)


def _wrap(lines: list[str], width: int) -> list[str]:
    """Each line folded to ``width`` columns (0: as is), continuation lines indented under the stage column."""
    if width <= 0:
        return lines
    return [folded for line in lines for folded in
            textwrap.wrap(line, width, subsequent_indent=" " * 12, break_long_words=False, break_on_hyphens=False)
            or [""]]


def _existing_dir(path: Path, option: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{option} {path}: no such folder")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m pipeline.inspect", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    summary = sub.add_parser("summary", help="the run in a few lines, or a summary of given manifest files",
                             description="Without MANIFEST: the run in a few lines (what `make demo` ends with). "
                                         "With MANIFEST paths: each file's rows by status, subset, model, licence.")
    summary.add_argument("manifest", nargs="*", type=Path, help="any manifest (.parquet) to summarize")
    summary.add_argument("--manifests", type=Path, default=Path("manifests"))
    summary.add_argument("--metrics", type=Path, default=Path("metrics"))
    summary.add_argument("--demo-truth", type=Path, default=Path("data/demo/truth.parquet"),
                         help="the demo's exact boxes and levels and its landmarks' model reference "
                              "(default: %(default)s)")
    summary.add_argument("--params", type=Path, default=Path("params.yaml"),
                         help="for the score block (the labels before correction are recomputed)")
    summary.add_argument("--report", type=Path, default=Path("report"))
    render = sub.add_parser("render", help="draw one video's labels on its frames",
                            description="Render one video: main-face box, every model's points (one colour per "
                                        "family), consensus, validity and per-frame uncertainty.")
    render.add_argument("video_id")
    render.add_argument("--out", type=Path, help="output file, .mp4 | .webp | .gif "
                                                 "(default: renders/<id>.mp4, renders/<id>_<frames>.mp4 with --frames)")
    render.add_argument("--max-side", type=int, default=640, help="longer side of a frame in px (default 640)")
    render.add_argument("--frames", help="clip frames to draw, e.g. 10-40 or 0-9,55 (0-based, inclusive; "
                                         "default: every frame)")
    why = sub.add_parser("why", help="one video's scores and why it is (not) hard",
                         description="One video's state per stage, rank and subset, score components against the "
                                     "scored videos' medians, invalid frames and most uncertain frames.")
    why.add_argument("video_id")
    why.add_argument("--width", type=int, help="fold lines to this many columns, 0 = never (default: the "
                                               "terminal's width when printing to one, else 0)")
    for p in (render, why):
        p.add_argument("--manifests", type=Path, default=Path("manifests"))
        p.add_argument("--params", type=Path, default=Path("params.yaml"), help="for score.weights")
    args = parser.parse_args(argv)
    try:
        _existing_dir(args.manifests, "--manifests")
        if args.cmd == "summary":
            if args.manifest:
                for path in args.manifest:
                    print("\n".join(manifest_summary(path)))
            else:
                inputs = ReportInputs(args.manifests, args.metrics, Path("plots"), args.demo_truth)
                score = stage_params("score", args.params)
                print("\n".join(summary_lines(run_summary(inputs, score), args.report)))
        elif args.cmd == "render":
            if args.max_side <= 0:
                raise ValueError(f"--max-side {args.max_side}: must be a positive number of pixels")
            tag = "_" + "_".join(args.frames.replace(" ", "").split(",")) if args.frames else ""
            out = args.out or Path("renders") / f"{args.video_id}{tag}.mp4"
            if out.suffix.lower() not in RENDER_SUFFIXES:
                raise ValueError(f"--out {out}: use one of {', '.join(RENDER_SUFFIXES)}")
            overlay = load_overlay(args.video_id, args.manifests, stage_params("score", args.params))
            frames = parse_frames(args.frames, overlay.n_frames) if args.frames else None
            print(render_video(overlay, out, args.max_side, frames))
        else:
            if args.width is not None and args.width < 0:
                raise ValueError(f"--width {args.width}: must be 0 (no folding) or a number of columns")
            width = args.width if args.width is not None else (
                shutil.get_terminal_size().columns if sys.stdout.isatty() else 0)
            lines = explain_video(args.video_id, args.manifests, stage_params("score", args.params))
            print("\n".join(_wrap(lines, width)))
    except (ManifestError, ParamsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
