"""Look at a run from the terminal: ``python -m pipeline.inspect <summary|render|why> --help``.

* ``summary``: the run in a few lines (videos per status, subsets, label quality, LDEQ with and without RwR, where
  the report is); with manifest paths, each manifest's row counts by status, subset, model, licence and the like.
* ``render VIDEO_ID``: one video drawn with its box, every model's points, the consensus, validity and uncertainty.
* ``why VIDEO_ID``: one video's status per stage, its scores, and why it is (or is not) hard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.manifest import ManifestError
from pipeline.params import ParamsError, ScoreParams, stage_params
from pipeline.render import RENDER_SUFFIXES, frame_uncertainty, load_overlay, read_video_rows, render_video
from pipeline.report import STAGE_MANIFESTS, ReportInputs, run_summary, summary_lines
from pipeline.uncertainty import COMPONENTS

__all__ = ["main", "manifest_summary", "explain_video"]

#: Columns whose value counts say something about a manifest (the first that exist are shown).
COUNT_COLUMNS = ("stage", "status", "subset", "official_subset", "model", "family", "licence", "license",
                 "detector", "source", "box_source", "valid", "decode_mode", "scenario", "difficulty")


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


def _stage_statuses(video_id: str, manifests: Path) -> list[str]:
    kinds = {"downloads": "downloads", "clips": "clips", "faces_status": "video_status",
             "label_status": "video_status", "scores": "scores"}
    out = []
    for stage, stem in STAGE_MANIFESTS:
        rows = read_video_rows(manifests / f"{stem}.parquet", kinds[stem], video_id, ["video_id", "status", "error"])
        if rows is None:
            out.append(f"{stage}: (no manifest)")
        elif len(rows) == 0:
            out.append(f"{stage}: (not in manifest)")
        else:
            row = rows.to_pylist()[0]
            out.append(f"{stage}: {row['status']}" + (f" ({row['error']})" if row["status"] != "ok" else ""))
    return out


def explain_video(video_id: str, manifests: Path, params: ScoreParams) -> list[str]:
    """Lines on one video: status per stage, rank and subset against the thresholds, the score's components against
    the scored videos' medians (the largest excess is why it ranks where it does), validity, worst frames."""
    lines = [video_id, "  " + " | ".join(_stage_statuses(video_id, manifests))]
    path = manifests / "scores.parquet"
    if not path.is_file():
        return lines + [f"  no scores: {path} is missing (run the score stage)"]
    scores = pd.read_parquet(path)
    mine = scores[scores.video_id == video_id]
    if mine.empty:
        return lines + ["  not scored (an earlier stage failed: see above)"]
    row = mine.iloc[0].to_dict()
    ok = scores[scores.status == "ok"]
    if row["status"] != "ok":
        return lines + [f"  not ranked: {row['status']}: {row['error']}"]
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
    valid = np.asarray(row["frame_valid"], bool)
    bad = np.flatnonzero(~valid)
    lines.append(f"  valid frames: {int(valid.sum())} of {len(valid)} ({valid.mean():.0%})"
                 + (f"; invalid: {_ranges(bad)}" if bad.size else ""))
    u = frame_uncertainty(row, params)
    scored = np.flatnonzero(np.isfinite(u))
    worst = scored[np.argsort(-u[scored], kind="stable")][:5]
    if worst.size:
        lines.append("  most uncertain frames: " + ", ".join(f"{k} ({u[k]:.3f})" for k in worst))
    return lines


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    summary = sub.add_parser("summary", help="the run in a few lines, or a summary of given manifest files",
                             description="Without MANIFEST: the run in a few lines (what `make demo` ends with). "
                                         "With MANIFEST paths: each file's rows by status, subset, model, licence.")
    summary.add_argument("manifest", nargs="*", type=Path, help="any manifest (.parquet) to summarize")
    summary.add_argument("--manifests", type=Path, default=Path("manifests"))
    summary.add_argument("--metrics", type=Path, default=Path("metrics"))
    summary.add_argument("--demo-truth", type=Path, default=Path("data/demo/truth.parquet"))
    summary.add_argument("--report", type=Path, default=Path("report"))
    render = sub.add_parser("render", help="draw one video's labels on its frames",
                            description="Render one video: main-face box, every model's points (one colour per "
                                        "family), consensus, validity and per-frame uncertainty.")
    render.add_argument("video_id")
    render.add_argument("--out", type=Path, help="output file, .mp4 | .webp | .gif (default: renders/<id>.mp4)")
    render.add_argument("--max-side", type=int, default=640, help="longer side of a frame in px (default 640)")
    why = sub.add_parser("why", help="one video's scores and why it is (not) hard",
                         description="One video's status per stage, rank and subset, score components against the "
                                     "scored videos' medians, invalid frames and most uncertain frames.")
    why.add_argument("video_id")
    for p in (render, why):
        p.add_argument("--manifests", type=Path, default=Path("manifests"))
        p.add_argument("--params", type=Path, default=Path("params.yaml"), help="for score.weights")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "summary":
            if args.manifest:
                for path in args.manifest:
                    print("\n".join(manifest_summary(path)))
            else:
                inputs = ReportInputs(args.manifests, args.metrics, Path("plots"), args.demo_truth)
                print("\n".join(summary_lines(run_summary(inputs), args.report)))
        elif args.cmd == "render":
            out = args.out or Path("renders") / f"{args.video_id}.mp4"
            if out.suffix.lower() not in RENDER_SUFFIXES:
                raise ValueError(f"--out {out}: use one of {', '.join(RENDER_SUFFIXES)}")
            overlay = load_overlay(args.video_id, args.manifests, stage_params("score", args.params))
            print(render_video(overlay, out, args.max_side))
        else:
            print("\n".join(explain_video(args.video_id, args.manifests, stage_params("score", args.params))))
    except (ManifestError, ParamsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
