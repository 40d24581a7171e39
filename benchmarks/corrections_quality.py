"""Labels against people's corrections: each model's and the consensus's NME on the frames a reviewer fixed.

The frames a person corrected in Label Studio (``corrections/*.parquet``, written by ``python -m pipeline.review
import``) are the only landmark truth a run has: the demo's landmark reference is model output (dlib + MediaPipe
mesh on the clean stills), and every other label is a model's or the consensus's. This script judges the labels
*before* correction against them: the consensus that the landmarks and faces manifests give each corrected video
(:func:`pipeline.uncertainty.video_labels`, as the annotate stage computes it before merging corrections; smoothed
``consensus`` and unsmoothed ``consensus_raw``) and every model's own points (the WFLW-98 points it defines, on the
corrected frames it labelled). NME is % of the person's inter-ocular distance (outer eye corners, WFLW points
60/72), mean over frames, per demo difficulty level (videos of the demo; ``data/demo/truth.parquet``) and per
video. Every corrected video counts, selected for a subset or not, as long as the label stage labelled it.

Run from the root of a project (its manifests built by ``dvc repro``):

    python benchmarks/corrections_quality.py --out benchmarks/results/corrections_quality.json

A folder without corrections gives one line and a result that says so. A corrections file that is not a corrections
manifest, or a correction of a frame its clip does not have, is one line naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.annotations import read_corrections
from pipeline.manifest import ManifestError, read_table, write_json
from pipeline.params import ParamsError, stage_params
from pipeline.report import correction_nme, pre_correction_labels


def corrected_frames(folder: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every corrected frame (the latest correction of each, as the annotate stage takes it): ``video_id, frame,
    landmarks``; and the corrected frames per annotator (every row of every file, superseded ones included)."""
    fixes = read_corrections(folder)
    rows = [{"video_id": vid, "frame": int(f), "landmarks": list(points)}
            for vid, frames in fixes.items() for f, points in sorted(frames.items())]
    annotators: Counter[str] = Counter()
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        annotators.update(read_table(path, "corrections", ["annotator"]).column("annotator").to_pylist())
    return pd.DataFrame(rows, columns=["video_id", "frame", "landmarks"]), dict(sorted(annotators.items()))


def ratios(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per group (level or video): the consensus's NME ÷ the best single model's, over the models that define at
    least 68 of the WFLW-98 points (a 5-point model's NME on its 5 points is no match for a whole face) and labelled
    every corrected frame of the group (so each is judged on the same frames as the consensus)."""
    out = []
    for (level, video), group in table.groupby(["level", "video_id"], dropna=False, sort=False):
        consensus = group[group.model == "consensus"]
        if consensus.empty:
            continue
        full = group[(group.family != "consensus") & (group.points >= 68) & (group.frames == consensus.frames.item())]
        if full.empty:
            continue
        best = full.loc[full.nme.idxmin()]
        out.append({"level": None if pd.isna(level) else int(level), "video_id": None if pd.isna(video) else video,
                    "best_model": best.model, "best_model_nme": round(float(best.nme), 4),
                    "consensus_nme": round(float(consensus.nme.item()), 4),
                    "consensus_over_best": round(float(consensus.nme.item() / best.nme), 4)})
    return out


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: missing → None, floats to 4 decimals, numpy scalars as Python's."""
    if pd.isna(value):
        return None
    value = value.item() if isinstance(value, np.generic) else value
    return round(value, 4) if isinstance(value, float) else value


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in table.astype(object).to_dict("records")]


def markdown(table: pd.DataFrame) -> str:
    """One row per model, one column per group (level k or video), NME % (frames)."""
    group = [f"level {int(lv)}" if not pd.isna(lv) else str(v) for lv, v in zip(table.level, table.video_id)]
    cells = table.assign(group=group, cell=[f"{n:.2f} ({f})" for n, f in zip(table.nme, table.frames)])
    wide = cells.pivot_table(index="model", columns="group", values="cell", aggfunc="first", sort=False)
    head = "| model | " + " | ".join(wide.columns) + " |\n|---|" + "---|" * len(wide.columns) + "\n"
    return head + "".join(f"| {m} | " + " | ".join("" if pd.isna(c) else c for c in row) + " |\n"
                          for m, row in wide.iterrows())


def measure(corrections: Path, manifests: Path, demo: Path | None, params: Path) -> dict[str, Any]:
    """The result (a JSON-ready dict) for one project."""
    human, annotators = corrected_frames(corrections)
    result: dict[str, Any] = {"corrections": str(corrections), "frames": len(human),
                              "videos": int(human.video_id.nunique()), "annotators": annotators,
                              "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    if human.empty:
        result["note"] = f"no corrected frames in {corrections}: the run has no landmark truth to measure against"
        return result
    score = stage_params("score", params)
    labels = pre_correction_labels(manifests, sorted(set(human.video_id)), score)
    for vid in sorted(set(human.video_id)):
        if vid in labels:
            unknown = sorted(set(human.frame[human.video_id == vid]) - set(labels[vid][0].frames.tolist()))
            if unknown:
                raise ValueError(f"{corrections}: {vid}: corrected frame(s) {unknown} are not frames of the clip "
                                 "(the clip changed since the review)")
    result["not_labelled"] = sorted(set(human.video_id) - set(labels))  # corrected, but the label stage has no rows
    levels: dict[str, int] = {}
    if demo is not None and demo.is_file():
        rows = pq.read_table(demo, columns=["video_id", "difficulty"]).to_pandas()
        levels = {str(k): int(v) for k, v in rows.groupby("video_id").difficulty.first().items()}
    by_group = correction_nme(human, labels, levels)
    per_video = correction_nme(human, labels, {})
    result.update(score_params=score.model_dump(mode="json"), by_group=records(by_group),
                  consensus_over_best_model=ratios(by_group), per_video=records(per_video),
                  markdown_by_group=markdown(by_group), markdown_per_video=markdown(per_video))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corrections", type=Path, default=Path("corrections"),
                        help="folder of corrections manifests (default: %(default)s, annotate.corrections)")
    parser.add_argument("--manifests", type=Path, default=Path("manifests"))
    parser.add_argument("--demo-truth", type=Path, default=Path("data/demo/truth.parquet"),
                        help="for the demo's difficulty levels (default: %(default)s; missing: per video only)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the score block")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = measure(args.corrections, args.manifests, args.demo_truth, args.params)
    except (ManifestError, ParamsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result["frames"] == 0:
        print(result["note"])
    else:
        print(f"{result['frames']} corrected frames of {result['videos']} video(s) by {result['annotators']}; NME % vs "
              "the people's points, labels before correction (frames):\n")
        print(result["markdown_by_group"])
        if result["not_labelled"]:
            print(f"corrected but never labelled (no landmark rows): {', '.join(result['not_labelled'])}")
        for r in result["consensus_over_best_model"]:
            where = f"level {r['level']}" if r["level"] is not None else r["video_id"]
            print(f"{where}: consensus {r['consensus_nme']:.2f} = {r['consensus_over_best']:.2f} x the best single "
                  f"model ({r['best_model']}, {r['best_model_nme']:.2f})")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
