"""The run's report: one HTML page of tables, figures and renders (what failed where, the subsets and what they look
like, the labels against people's corrections and against the demo's model reference, the LDEQ results), and a JSON
summary of the figures it shows.

Two yardsticks for the landmark labels, kept apart by name:

* **People's corrections** (``label_source == "human"`` in the annotations: the frames a reviewer fixed in Label
  Studio, ``python -m pipeline.review``) are the only landmark truth a run has. :func:`correction_nme` gives each
  model's and the consensus's NME against them, from the labels *before* the correction.
* **The demo's model reference** (``reference_landmarks`` of ``data/demo/truth.parquet``) is model output: dlib
  ERT-68 + MediaPipe mesh on the clean stills, carried through the known warp. Two of the label stage's voters made
  it, so a small distance to it is agreement with them, never accuracy (:func:`label_reference_distance`). The demo's
  boxes, visibility and levels are exact and stay truth.

Every section reads its own inputs and says what is missing instead of failing, so a partial run (no evaluation
yet, no demo) still gets a page. :func:`run_summary` and :func:`summary_lines` are the few-line version that
``python -m pipeline.inspect summary`` prints at the end of ``make demo``.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import plots
from pipeline.cluster import map_videos
from pipeline.manifest import ManifestError, rows_by_video, write_json
from pipeline.params import ClusterParams, ReportParams, ScoreParams
from pipeline.render import contact_sheet, family_colour, frame_uncertainty, load_overlay, pick_frames, render_video
from pipeline.schemas import error_status, valid_flags
from pipeline.uncertainty import VideoLabels, video_labels

__all__ = ["ReportInputs", "label_reference_distance", "model_reference_distance", "human_points",
           "pre_correction_labels", "correction_nme", "run_corrections", "run_summary", "summary_lines",
           "build_report", "render_one", "write_run_metrics", "STAGE_MANIFESTS", "REFERENCE_NOTE"]

log = logging.getLogger(__name__)

#: Per-video status manifests in chain order: (stage, file stem).
STAGE_MANIFESTS = (("download", "downloads"), ("trim", "clips"), ("faces", "faces_status"),
                   ("label", "label_status"), ("score", "scores"))


@dataclass(frozen=True)
class ReportInputs:
    """Where a run's results are: manifests, DVC metrics and plot tables, and the demo's ``truth.parquet`` (if any:
    exact boxes, levels, and the landmarks' model reference)."""

    manifests: Path
    metrics: Path
    plots: Path
    demo_truth: Path | None


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """A Parquet or CSV file as a DataFrame, or ``None`` when it does not exist."""
    if not path.is_file():
        return None
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path, columns=columns)


#: What the demo's landmark reference is, said wherever a distance to it is shown.
REFERENCE_NOTE = ("The demo's landmark reference is model output, not truth: dlib ERT-68 and MediaPipe mesh points "
                  "(on a dlib HOG box) measured once on each clean still and carried through the known warp. Two of "
                  "the label stage's voters made it, so agreeing with it is not accuracy: a small distance means the "
                  "labels read the face as those two models read the clean photo. (The demo's boxes, visibility and "
                  "levels are exact.)")


def _nme(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-row normalised mean distance (% of ``ref``'s inter-ocular distance, outer eye corners 60/72) over the
    points in ``mask`` (default: every point)."""
    iod = np.linalg.norm(ref[:, 60] - ref[:, 72], axis=-1)
    err = np.linalg.norm(pred - ref, axis=-1)
    if mask is None:
        return 100 * err.mean(-1) / iod
    return 100 * (err * mask).sum(-1) / np.maximum(mask.sum(-1), 1) / iod


def _stack(column: pd.Series) -> np.ndarray:
    return np.stack([np.stack(p) for p in column]).astype(np.float64)


def label_reference_distance(annotations: pd.DataFrame, demo: pd.DataFrame) -> pd.DataFrame:
    """Per demo difficulty level: distance (% inter-ocular) of the consensus labels to the demo's model reference
    (``reference_landmarks``; model output, not truth: :data:`REFERENCE_NOTE`), over the frames the labels mark valid
    (all frames where the annotations carry no ``valid`` column). Columns ``difficulty, frames, reference_distance``."""
    annotations = annotations[valid_flags(annotations)]
    merged = annotations.merge(demo[demo.has_truth], on=["video_id", "frame"])
    if merged.empty:
        return pd.DataFrame(columns=["difficulty", "frames", "reference_distance"])
    merged["reference_distance"] = _nme(_stack(merged.landmarks), _stack(merged.reference_landmarks))
    return (merged.groupby("difficulty").agg(frames=("frame", "size"),
                                             reference_distance=("reference_distance", "mean")).reset_index())


def model_reference_distance(landmarks: pd.DataFrame, annotations: pd.DataFrame | None,
                             demo: pd.DataFrame) -> pd.DataFrame:
    """Distance (%) of each model to the demo's model reference per difficulty level, over the WFLW-98 points the
    model defines and every frame it labelled; the consensus (annotations, valid frames) is added as model
    ``consensus``. Columns ``model, family, difficulty, frames, reference_distance``."""
    ref_rows = demo[demo.has_truth][["video_id", "frame", "difficulty", "reference_landmarks"]]
    parts = []
    merged = landmarks.merge(ref_rows, on=["video_id", "frame"])
    if not merged.empty:
        mask = np.stack([np.asarray(m, bool) for m in merged["mask"]])
        parts.append(merged[["model", "family", "difficulty"]].assign(
            reference_distance=_nme(_stack(merged.wflw98), _stack(merged.reference_landmarks), mask)))
    if annotations is not None and not annotations.empty:
        merged = annotations[valid_flags(annotations)].merge(ref_rows, on=["video_id", "frame"])
        if not merged.empty:
            parts.append(pd.DataFrame({"model": "consensus", "family": "consensus",
                                       "difficulty": merged.difficulty.to_numpy(),
                                       "reference_distance": _nme(_stack(merged.landmarks),
                                                                  _stack(merged.reference_landmarks))}))
    if not parts:
        return pd.DataFrame(columns=["model", "family", "difficulty", "frames", "reference_distance"])
    rows = pd.concat(parts, ignore_index=True)
    return (rows.groupby(["model", "family", "difficulty"], sort=False)
            .agg(frames=("reference_distance", "size"), reference_distance=("reference_distance", "mean"))
            .reset_index())


# ------------------------------------------------------------------------------------- people's corrections


def human_points(annotations: pd.DataFrame | None) -> pd.DataFrame:
    """The frames a person corrected (``label_source == "human"``): ``video_id, frame, landmarks`` (the person's
    points, taken verbatim from ``corrections/`` by the annotate stage). Empty for annotations without the column."""
    if annotations is None or "label_source" not in annotations:
        return pd.DataFrame(columns=["video_id", "frame", "landmarks"])
    human = annotations[annotations.label_source == "human"]
    return human[["video_id", "frame", "landmarks"]].reset_index(drop=True)


#: Per video: its labels before correction and its landmark rows.
PreCorrection = dict[str, tuple[VideoLabels, pa.Table]]


def pre_correction_labels(manifests: Path, videos: list[str], score: ScoreParams) -> PreCorrection:
    """Per video: the consensus labels the run made before any correction (:func:`pipeline.uncertainty.video_labels`
    on the landmarks and faces manifests, as the annotate stage computes them) and the video's landmark rows."""
    wanted = [("video_id", "in", videos)]
    lm = pq.read_table(manifests / "landmarks.parquet", filters=wanted)
    faces = pq.read_table(manifests / "faces.parquet", filters=wanted)
    lm_by, faces_by = rows_by_video(lm), rows_by_video(faces)
    return {v: (video_labels(lm_by[v], score, faces_by.get(v)), lm_by[v]) for v in videos if v in lm_by}


def correction_nme(human: pd.DataFrame, labels: PreCorrection, levels: dict[str, int]) -> pd.DataFrame:
    """NME (% of the person's inter-ocular distance, outer eye corners 60/72) against people's points, on the
    corrected frames, of each model (the WFLW-98 points it defines, the frames it labelled) and of the consensus
    before correction (``consensus``: the label as smoothed; ``consensus_raw``: before smoothing), grouped by demo
    difficulty level, or by video where a video has no level (not a demo clip).

    Args:
        human: ``video_id, frame, landmarks`` (:func:`human_points`).
        labels: per video, its pre-correction :class:`~pipeline.uncertainty.VideoLabels` and landmark rows.
        levels: demo video id → difficulty level.

    Returns columns ``level`` (null for a video without one), ``video_id`` (null where grouped by level),
    ``model, family, points`` (WFLW-98 points judged: 98 for the consensus, a 5-point model's 5), ``frames, nme``;
    consensus rows first, then models in the order they appear.
    """
    columns = ["level", "video_id", "model", "family", "points", "frames", "nme"]
    parts = []
    for vid, rows in human.groupby("video_id", sort=True):
        if vid not in labels:
            continue
        lab, lm = labels[vid]
        level = levels.get(vid)
        group = {"level": level, "video_id": None if level is not None else vid}
        person = _stack(rows.landmarks)
        pos = {int(f): i for i, f in enumerate(lab.frames)}
        have = np.array([int(f) in pos for f in rows.frame])
        idx = np.array([pos[int(f)] for f in rows.frame[have]], dtype=np.int64)
        for name, points in (("consensus", lab.points), ("consensus_raw", lab.raw)):
            pred = points[idx].astype(np.float64)
            ok = np.isfinite(pred).all(axis=(1, 2))
            if ok.any():
                parts.append(pd.DataFrame({**group, "model": name, "family": "consensus", "points": 98,
                                           "nme": _nme(pred[ok], person[have][ok])}))
        model_rows = lm.select(["frame", "model", "family", "wflw98", "mask"]).to_pandas()
        merged = model_rows.merge(rows.assign(frame=rows.frame.astype("int64")), on="frame")
        if not merged.empty:
            mask = np.stack([np.asarray(m, bool) for m in merged["mask"]])
            parts.append(merged[["model", "family"]].assign(
                **group, points=mask.sum(axis=1), nme=_nme(_stack(merged.wflw98), _stack(merged.landmarks), mask)))
    if not parts:
        return pd.DataFrame(columns=columns)
    table = pd.concat(parts, ignore_index=True)
    table["level"] = table.level.astype("Int64")
    out = (table.groupby(["level", "video_id", "model", "family"], sort=False, dropna=False)
           .agg(points=("points", "max"), frames=("nme", "size"), nme=("nme", "mean")).reset_index())
    out["order"] = ~out.family.eq("consensus")
    out = out.sort_values(["level", "video_id", "order"], kind="stable", na_position="last")
    return out[columns].reset_index(drop=True)


def run_corrections(inputs: ReportInputs, score: ScoreParams) -> pd.DataFrame | None:
    """:func:`correction_nme` of a run: people's points from the annotations (the corrections the annotate stage
    merged), the labels before correction from the landmarks and faces manifests, levels from the demo's
    ``truth.parquet`` where there is one. ``None`` where the run has no annotations or no landmarks/faces manifest;
    an empty table where no frame was corrected."""
    m = inputs.manifests
    path = m / "annotations.parquet"
    if not path.is_file():
        return None
    annotations = None
    if "label_source" in pq.read_schema(path).names:  # older writers: no label source, no corrections
        annotations = pq.read_table(path, columns=["video_id", "frame", "landmarks", "label_source"],
                                    filters=[("label_source", "=", "human")]).to_pandas()
    human = human_points(annotations)
    if human.empty:
        return correction_nme(human, {}, {})
    if not ((m / "landmarks.parquet").is_file() and (m / "faces.parquet").is_file()):
        return None
    levels: dict[str, int] = {}
    if inputs.demo_truth is not None and inputs.demo_truth.is_file():
        demo = pd.read_parquet(inputs.demo_truth, columns=["video_id", "difficulty"])
        levels = {str(k): int(v) for k, v in demo.groupby("video_id").difficulty.first().items()}
    labels = pre_correction_labels(m, sorted(set(human.video_id)), score)
    return correction_nme(human, labels, levels)


def _ldeq_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"subset": s, "method": m, **v} for s, methods in evaluation.get("subsets", {}).items()
            for m, v in methods.items()]


def run_summary(inputs: ReportInputs, score: ScoreParams | None = None) -> dict[str, Any]:
    """The headline numbers of a run, each ``None`` where its inputs are missing: status counts per stage, subset
    sizes, the labels' NME against people's corrections (needs ``score``, the consensus parameters: the labels
    before correction are recomputed), their distance to the demo's model reference, and LDEQ's video NME/NMF per
    subset and method."""
    status: dict[str, dict[str, int]] = {}
    for stage, name in STAGE_MANIFESTS:
        df = _read(inputs.manifests / f"{name}.parquet", ["video_id", "status"])
        if df is not None:
            status[stage] = {str(k): int(v) for k, v in df.status.value_counts().sort_index().items()}
    scores = _read(inputs.manifests / "scores.parquet", ["video_id", "status", "subset"])
    subsets = None
    if scores is not None:
        ok = scores[scores.status == "ok"]
        subsets = {"hard": int((ok.subset == "hard").sum()), "easy": int((ok.subset == "easy").sum()),
                   "between": int(ok.subset.isna().sum()), "scored": len(ok)}
    reference = None
    demo_path = inputs.demo_truth
    ann_path = inputs.manifests / "annotations.parquet"
    if demo_path is not None and demo_path.is_file() and ann_path.is_file():
        ann = pd.read_parquet(ann_path, columns=[c for c in ("video_id", "frame", "landmarks", "valid")
                                                 if c in pq.read_schema(ann_path).names])
        reference = label_reference_distance(ann, pd.read_parquet(demo_path)).to_dict("records")
    corrections = None
    if score is not None:
        table = run_corrections(inputs, score)
        corrections = None if table is None else _records(table)
    labels = None  # frames by label source: a person's (human), carried from corrections (propagated), pseudo
    if ann_path.is_file() and "label_source" in pq.read_schema(ann_path).names:
        sources = pd.read_parquet(ann_path, columns=["label_source"]).label_source.fillna("pseudo")
        labels = {k: int((sources == k).sum()) for k in ("human", "propagated", "pseudo", "bridged")}
    metrics = inputs.metrics / "evaluate.json"
    ldeq = _ldeq_rows(json.loads(metrics.read_text())) if metrics.is_file() else None
    return {"status": status, "subsets": subsets, "corrections": corrections, "label_reference_distance": reference,
            "labels": labels, "ldeq": ldeq}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values: pandas' missing values (``pd.NA``, ``None``) become ``None``."""
    return [{k: None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
            for row in table.astype(object).to_dict("records")]


def _correction_group(row: dict[str, Any]) -> str:
    """``level<k>`` for a demo clip, else ``video/<video id>`` (ids are safe file names: pipeline.sources)."""
    return f"level{int(row['level'])}" if row["level"] is not None else f"video/{Path(str(row['video_id'])).name}"


def write_run_metrics(summary: dict[str, Any], directory: Path) -> list[Path]:
    """The run's DVC metrics from :func:`run_summary`, a few keys per file (DVC shows every metrics file as a row of
    one table whose columns are the union of their keys): ``status/<stage>/<status>.json`` and
    ``subsets/<hard|easy>.json`` = ``{"videos"}``; ``corrections/<level<k>|video/<id>>/<model>.json`` = ``{"nme",
    "frames"}`` (NME % against people's corrected points, labels before correction); ``labels/level<k>.json`` =
    ``{"reference_distance", "frames"}`` (the consensus's distance % to the demo's model reference: model output,
    not truth). Earlier ``*.json`` under ``directory`` are removed first, so no stale file survives a rerun."""
    for stale in directory.rglob("*.json"):
        stale.unlink()
    files: dict[Path, dict[str, Any]] = {}
    for stage, counts in summary["status"].items():
        files.update({directory / "status" / stage / f"{status}.json": {"videos": n} for status, n in counts.items()})
    for subset in ("hard", "easy"):
        if summary["subsets"]:
            files[directory / "subsets" / f"{subset}.json"] = {"videos": summary["subsets"][subset]}
    for row in summary.get("corrections") or []:
        files[directory / "corrections" / _correction_group(row) / f"{Path(row['model']).name}.json"] = {
            "nme": float(row["nme"]), "frames": int(row["frames"])}
    for row in summary["label_reference_distance"] or []:
        files[directory / "labels" / f"level{int(row['difficulty'])}.json"] = {
            "reference_distance": float(row["reference_distance"]), "frames": int(row["frames"])}
    for path, values in files.items():
        write_json(path, values)
    return list(files)


def summary_lines(summary: dict[str, Any], report: Path | None = None) -> list[str]:
    """A few human lines from :func:`run_summary` (what ``make demo`` ends with)."""
    lines = []
    if summary["status"]:
        first = next(iter(summary["status"].values()))
        lines.append(f"videos: {sum(first.values())} listed; per stage:")
        for stage, counts in summary["status"].items():
            lines.append(f"  {stage:<9} " + ", ".join(f"{n} {s}" for s, n in
                                                      sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))))
    else:
        lines.append("videos: no stage manifest found (run `dvc repro`)")
    s = summary["subsets"]
    lines.append(f"subsets: {s['hard']} hard, {s['easy']} easy, {s['between']} in between (of {s['scored']} scored)"
                 if s else "subsets: no scores yet")
    lines += _correction_lines(summary.get("corrections"))
    if summary["label_reference_distance"]:
        levels = ", ".join(f"L{int(r['difficulty'])} {r['reference_distance']:.2f}"
                           for r in summary["label_reference_distance"])
        lines.append(f"label distance % to the demo's model reference (model output, not truth): {levels}")
    else:
        lines.append("label distance to the demo's model reference: no demo or no annotations")
    if summary.get("labels"):
        n = summary["labels"]
        lines.append(f"labels: {n['human']} human, {n['propagated']} propagated, {n['pseudo']} pseudo, "
                     f"{n.get('bridged', 0)} bridged frames (review: python -m pipeline.review export|import)")
    if summary["ldeq"]:
        by = {(r["subset"], r["method"]): r for r in summary["ldeq"]}
        for subset in ("hard", "easy"):
            none, rwr = by.get((subset, "none")), by.get((subset, "rwr"))
            if none and rwr:
                lines.append(f"LDEQ {subset}: NME {none['nme']:.2f} % / NMF {none['nmf']:.2f} from scratch; "
                             f"NME {rwr['nme']:.2f} % / NMF {rwr['nmf']:.2f} with RwR "
                             f"(NMF x{rwr['nmf'] / none['nmf']:.2f})")
    else:
        lines.append("LDEQ: not evaluated yet (metrics/evaluate.json missing)")
    if report is not None:
        page = report / "index.html"
        lines.append(f"report: {page}" if page.is_file() else f"report: not built yet ({page} missing)")
    return lines


def _correction_lines(rows: list[dict[str, Any]] | None) -> list[str]:
    """The summary's line on people's corrections: the consensus's NME before correction, per group."""
    if rows is None:
        return []
    consensus = [r for r in rows if r["model"] == "consensus"]
    if not consensus:
        return ["labels vs people's corrections: no corrected frame (the run has no landmark truth; "
                "python -m pipeline.review export|import)"]
    groups = [f"L{r['level']} {r['nme']:.2f} ({r['frames']} fr)" for r in consensus if r["level"] is not None]
    others = [r for r in consensus if r["level"] is None]  # not demo clips: pooled, one video each
    if others:
        frames = sum(r["frames"] for r in others)
        pooled = sum(r["nme"] * r["frames"] for r in others) / frames
        groups.append(f"{'other videos' if groups else 'all'} {pooled:.2f} ({frames} fr, {len(others)} videos)")
    return [f"consensus NME % vs people's corrections (before correction): {', '.join(groups)}"]


def render_one(video_id: str, manifests: Path, out: Path, score: ScoreParams, max_side: int) -> dict[str, Any]:
    """Render one video to ``out`` (a dask task of the report); failures become a row, never an exception."""
    try:
        render_video(load_overlay(video_id, manifests, score), out, max_side)
    except (ManifestError, ValueError, OSError) as err:
        return {"video_id": video_id, "status": "error", "error": str(err)}
    return {"video_id": video_id, "status": "ok", "path": str(out)}


def _table(df: pd.DataFrame, links: dict[str, str] | None = None) -> str:
    text = df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, classes="t", escape=True)
    for video_id, href in (links or {}).items():  # video ids are plain names; the link replaces the cell text
        cell = f"<td>{html.escape(video_id)}</td>"
        text = text.replace(cell, f'<td><a href="{html.escape(href)}">{html.escape(video_id)}</a></td>', 1)
    return text


def _missing(what: str, path: Path, hint: str) -> str:
    return f'<p class="missing">{html.escape(what)}: not available, {html.escape(str(path))} is missing ({hint}).</p>'


def _figure(out: Path, name: str, make: Any, data: Any, caption: str, made: dict[str, str]) -> str:
    """Draw figure ``name`` with ``make(data, path)``; a figure that cannot be drawn becomes a note on the page."""
    path = out / "plots" / f"{name}.png"
    try:
        make(data, path)
    except (ValueError, KeyError) as err:
        return f'<p class="missing">{html.escape(caption)}: no figure ({html.escape(str(err))}).</p>'
    made[name] = str(path.relative_to(out))
    return (f'<figure><img src="plots/{name}.png" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _row(*cells: str) -> str:
    return '<div class="row">' + "".join(f"<div>{c}</div>" for c in cells) + "</div>"


def _easy_sample(easy: pd.DataFrame, n: int) -> list[str]:
    """``n`` easy videos spread evenly over the easy ranks (the easiest and the borderline ones both show)."""
    if n <= 0 or easy.empty:
        return []
    ranked = easy.sort_values("rank").video_id.tolist()
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    return [ranked[i] for i in picks]


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:78em;margin:1.5em auto;padding:0 1em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.t{border-collapse:collapse;font-size:.85em}.t td,.t th{padding:2px 8px;text-align:right}
.t tr:nth-child(even){background:#f4f4f4}
.row{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
figure{margin:0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.8em;color:#555}
.missing{color:#a33;font-style:italic}.sheet img{max-width:100%}
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.8em;height:.8em;
border-radius:50%;margin-right:.3em;vertical-align:middle;border:1px solid #555}
"""


def build_report(inputs: ReportInputs, out: Path, params: ReportParams, score: ScoreParams,
                 cluster: ClusterParams | None = None, metrics_out: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Write the report's pictures under ``out`` (``plots/``, ``renders/``, ``sheets/``) and the run's DVC metrics
    under ``metrics_out`` (default ``<inputs.metrics>/report``, :func:`write_run_metrics`); return the HTML page and
    the summary of what it shows. Renders run on dask when ``cluster`` is given, else in this process."""
    for sub in ("plots", "renders", "sheets"):  # a rerun must not keep pictures of videos no longer selected
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True, exist_ok=True)
    m = inputs.manifests
    made: dict[str, str] = {}
    summary: dict[str, Any] = {"missing": []}

    def missing(what: str, path: Path, hint: str) -> str:
        summary["missing"].append(str(path))
        return _missing(what, path, hint)

    parts = _status_section(inputs, score, metrics_out, summary, missing)
    scores = _read(m / "scores.parquet")
    ann = _read(m / "annotations.parquet")
    parts += _subsets_section(m, scores, ann, out, made, summary, missing)
    if scores is not None:
        parts += _subset_video_sections(m, scores, out, params, score, cluster, made, summary)
    else:
        parts.append(missing("Renders", m / "scores.parquet", "run the score stage"))
    parts += _corrections_section(inputs, summary, missing)
    parts += _self_checks_section(m / "landmarks.parquet", score, summary, missing)
    parts += _demo_sections(inputs, scores, ann, out, made, summary, missing)
    parts += _ldeq_sections(inputs, out, made, summary, missing)
    summary["plots"] = made
    page = ("<!doctype html><html lang=en><meta charset=utf-8><title>WFLW-V pipeline report</title>"
            f"<style>{_STYLE}</style><h1>WFLW-V pipeline report</h1>" + "".join(parts) + "</html>")
    return page, summary


def _status_section(inputs: ReportInputs, score: ScoreParams, metrics_out: Path | None, summary: dict[str, Any],
                    missing: Any) -> list[str]:
    """Where videos were lost: the videos per stage and status (also written, with the headline figures, as the
    run's DVC metrics)."""
    head = run_summary(inputs, score)
    write_run_metrics(head, inputs.metrics / "report" if metrics_out is None else metrics_out)
    summary["status"] = [{"stage": stage, **counts} for stage, counts in head["status"].items()]
    summary["corrections"] = head["corrections"]
    parts = ["<h2>Videos per stage and status</h2>"]
    if summary["status"]:
        parts.append(_table(pd.DataFrame(summary["status"]).set_index("stage").fillna(0).astype(int).reset_index()))
    else:
        parts.append(missing("Status", inputs.manifests, "no stage manifest yet"))
    return parts


def _subsets_section(m: Path, scores: pd.DataFrame | None, ann: pd.DataFrame | None, out: Path,
                     made: dict[str, str], summary: dict[str, Any], missing: Any) -> list[str]:
    """The subsets (videos, frames, disagreement, valid and corrected shares) beside the uncertainty histogram."""
    if ann is not None and not ann.empty:
        agg: dict[str, Any] = {"videos": ("video_id", "nunique"), "frames": ("frame", "size"),
                               "disagreement": ("disagreement", "mean")}
        if "valid" in ann:
            ann = ann.assign(valid=valid_flags(ann))
            agg["valid_share"] = ("valid", "mean")
        if "label_source" in ann:  # frames a person corrected, and those the corrections were carried to
            ann = ann.assign(human=ann.label_source == "human", propagated=ann.label_source == "propagated")
            agg.update(human=("human", "sum"), propagated=("propagated", "sum"))
        subsets = ann.groupby("subset").agg(**agg).reset_index()
        summary["subsets"] = subsets.to_dict("records")
        subsets_html = _table(subsets)
    else:
        summary["subsets"] = []
        subsets_html = missing("Subsets", m / "annotations.parquet", "run the annotate stage")
    if scores is not None:
        hist = _figure(out, "uncertainty", plots.uncertainty_hist, scores,
                       "Video uncertainty by subset; dashed: the selection thresholds", made)
    else:
        hist = missing("Uncertainty", m / "scores.parquet", "run the score stage")
    return ["<h2>Subsets and the uncertainty that selects them</h2>", _row(subsets_html, hist)]


def _subset_video_sections(m: Path, scores: pd.DataFrame, out: Path, params: ReportParams, score: ScoreParams,
                           cluster: ClusterParams | None, made: dict[str, str], summary: dict[str, Any]) -> list[str]:
    """The hard and easy subsets: every hard video and a sample of easy ones rendered, their tables and the contact
    sheets of their most (hard) and least (easy) uncertain frames."""
    ok = scores[scores.status == "ok"].astype({"rank": "int64"})  # every scored video is ranked
    hard = ok[ok.subset == "hard"].sort_values("rank")
    easy = ok[ok.subset == "easy"]
    renders = _render_subsets(m, hard.video_id.tolist() + _easy_sample(easy, params.easy_renders), out, params,
                              score, cluster)
    summary["renders"] = renders
    frame_u = {r["video_id"]: frame_uncertainty(r, score) for r in ok.to_dict("records")}
    legend = _legend(m)
    cols = ["rank", "video_id", "uncertainty", "disagreement", "instability", "confidence", "valid_share"]
    parts = ["<h2>Hard subset</h2>",
             "<p>Every hard video's render (click a video id): box coloured by how the faces stage found it, "
             "model points coloured by family, consensus white where the frame is valid and red where not, "
             "the frame's uncertainty and the video's timeline below.</p>" + legend]
    sheet_hard = _sheet(out, "hard_worst", {v: frame_u[v] for v in hard.video_id}, params.sheet_frames, True,
                        m, score, "Hard subset: the most uncertain frames", made)
    parts.append(_row(_table(hard[cols], renders) if not hard.empty else "<p>No hard video.</p>", sheet_hard))
    parts.append("<h2>Easy subset</h2>")
    sample = [v for v in _easy_sample(easy, params.easy_renders) if v in renders]
    links = " ".join(f'<a href="{html.escape(renders[v])}">{html.escape(v)}</a>' for v in sample)
    parts.append(f"<p>{len(easy)} easy videos; rendered sample: {links or 'none'}.</p>")
    sheet_easy = _sheet(out, "easy_best", {v: frame_u[v] for v in easy.video_id}, params.sheet_frames, False,
                        m, score, "Easy subset: the least uncertain frames", made)
    parts.append(_row(_table(easy.sort_values("rank")[cols].head(12)), sheet_easy))
    return parts


def _render_subsets(m: Path, targets: list[str], out: Path, params: ReportParams, score: ScoreParams,
                    cluster: ClusterParams | None) -> dict[str, str]:
    """Render ``targets`` into ``out/renders``; return video id → the render's path relative to ``out``."""
    suffix = f".{params.render_format}"
    items = [{"video_id": v, "out": out / "renders" / f"{v}{suffix}"} for v in targets]
    renders: dict[str, str] = {}
    for r in _render_all(items, m, score, params.render_max_side, cluster):
        if r["status"] == "ok":
            renders[r["video_id"]] = f"renders/{r['video_id']}{suffix}"
        else:
            log.error("report: render of %s failed: %s", r["video_id"], r["error"])
    return renders


def _render_all(items: list[dict[str, Any]], manifests: Path, score: ScoreParams, max_side: int,
                cluster: ClusterParams | None) -> list[dict[str, Any]]:
    if cluster is not None:
        return map_videos(_render_task, items, cluster,
                          on_error=lambda i, e: error_status(i["video_id"], e),
                          manifests=manifests.resolve(), score=score, max_side=max_side)
    return [_render_task(i, manifests, score, max_side) for i in items]


def _render_task(item: dict[str, Any], manifests: Path, score: ScoreParams, max_side: int) -> dict[str, Any]:
    return render_one(item["video_id"], manifests, Path(item["out"]), score, max_side)


def _legend(manifests: Path) -> str:
    path = manifests / "landmarks.parquet"
    if not path.is_file():
        return ""
    families = sorted(set(pq.read_table(path, columns=["family"]).column("family").to_pylist()))
    items = [("consensus (valid)", (255, 255, 255)), ("consensus (invalid)", (255, 50, 50))]
    items += [(f, family_colour(f)) for f in families]
    return '<p class="legend">' + "".join(
        f'<span><i style="background:rgb{c}"></i>{html.escape(n)}</span>' for n, c in items) + "</p>"


def _sheet(out: Path, name: str, frame_u: dict[str, np.ndarray], n: int, worst: bool, manifests: Path,
           score: ScoreParams, title: str, made: dict[str, str]) -> str:
    picks = pick_frames(frame_u, n, worst=worst)
    if not picks:
        return '<p class="missing">No scored frame for a contact sheet.</p>'
    overlays = {v: load_overlay(v, manifests, score) for v in dict.fromkeys(v for v, _ in picks)}
    path = out / "sheets" / f"{name}.png"
    try:
        contact_sheet([(overlays[v], k) for v, k in picks], path, title)
    except (ValueError, OSError, ManifestError) as err:
        return f'<p class="missing">{html.escape(title)}: no contact sheet ({html.escape(str(err))}).</p>'
    made[f"sheet_{name}"] = str(path.relative_to(out))
    return (f'<figure class="sheet"><a href="sheets/{name}.png"><img src="sheets/{name}.png" '
            f'alt="{html.escape(title)}"></a><figcaption>{html.escape(title)}</figcaption></figure>')


def _corrections_section(inputs: ReportInputs, summary: dict[str, Any], missing: Any) -> list[str]:
    """Each model's and the consensus's NME against the frames people corrected, from the labels before correction:
    the run's only landmark truth."""
    parts = ["<h2>Labels against people's corrections (the run's landmark truth)</h2>"]
    rows = summary.get("corrections")
    if rows is None:
        return parts + [missing("Corrections", inputs.manifests / "annotations.parquet",
                                "run the label and annotate stages")]
    if not rows:
        return parts + ["<p>No corrected frames: this run has no landmark truth (a review round adds it: "
                        "<code>python -m pipeline.review export</code>, then <code>import</code>).</p>"]
    table = pd.DataFrame(rows)
    table.insert(0, "group", [f"level {r['level']}" if r["level"] is not None else f"video {r['video_id']}"
                              for r in rows])
    frames = int(table[table.model == "consensus"].frames.sum())

    def wide(values: str) -> pd.DataFrame:  # one row per model, one column per level (or video)
        out = table.pivot_table(index=["model", "family"], columns="group", values=values, sort=False)
        out.columns = list(out.columns)
        if values == "frames":
            out = out.astype("Int64")
        return out.reset_index()

    return parts + [
        f"<p>{frames} frames a reviewer corrected (Label Studio, <code>corrections/</code>; "
        "<code>label_source</code> human). NME, % of the person's inter-ocular distance (outer eye corners), of "
        "each model over the points it defines and of the consensus <em>before</em> the correction "
        "(<code>consensus</code>: the label as smoothed; <code>consensus_raw</code>: before smoothing), per demo "
        "level, or per video where a video has no level.</p>",
        _table(wide("nme")),
        "<p>Corrected frames per model and group (a model counts where it labelled the frame):</p>",
        _table(wide("frames"))]


def self_check_table(landmarks: Path, score: ScoreParams) -> pd.DataFrame:
    """Per model: frames labelled, mean and 90th percentile of its mirror and jitter self-disagreement (inter-ocular
    units), and the share of its frames where a check passed ``score.max_self_disagreement`` (it did not vote)."""
    columns = ["model", "family", "mirror_disagreement", "jitter_disagreement"]
    table = pq.read_table(landmarks, columns=columns).to_pandas()
    worst = table[["mirror_disagreement", "jitter_disagreement"]].max(axis=1)
    table["no_vote"] = worst > score.max_self_disagreement
    grouped = table.groupby(["model", "family"], sort=False)
    return pd.DataFrame({
        "frames": grouped.size(),
        "mirror_mean": grouped.mirror_disagreement.mean(), "mirror_p90": grouped.mirror_disagreement.quantile(0.9),
        "jitter_mean": grouped.jitter_disagreement.mean(), "jitter_p90": grouped.jitter_disagreement.quantile(0.9),
        "no_vote_share": grouped.no_vote.mean(),
    }).reset_index()


def _self_checks_section(landmarks: Path, score: ScoreParams, summary: dict[str, Any], missing: Any) -> list[str]:
    """Each model's truth-free self-checks over the run (what the vote and the uncertainty use)."""
    parts = ["<h2>Self-checks: how much each model disagrees with itself (no ground truth needed)</h2>"]
    if not landmarks.is_file():
        return parts + [missing("Self-checks", landmarks, "run the label stage")]
    if "mirror_disagreement" not in pq.read_schema(landmarks).names:
        return parts + [missing("Self-checks", landmarks, "rerun the label stage (written before the checks)")]
    table = self_check_table(landmarks, score)
    summary["self_checks"] = _records(table)
    return parts + [
        "<p>Per model, on every frame it labelled: <em>mirror</em>, the distance between its points and its points "
        "on the mirrored crop mapped back (left/right swapped); <em>jitter</em>, between its points and its points "
        "from known small shifts, scalings and turns of its input. Inter-ocular units. Where either passes "
        f"<code>score.max_self_disagreement</code> ({score.max_self_disagreement}) the model does not vote on that "
        "frame (<code>no_vote_share</code>).</p>", _table(table)]


def _demo_sections(inputs: ReportInputs, scores: pd.DataFrame | None, ann: pd.DataFrame | None, out: Path,
                   made: dict[str, str], summary: dict[str, Any], missing: Any) -> list[str]:
    parts = ["<h2>Demo: labels against the model reference</h2>", f"<p>{html.escape(REFERENCE_NOTE)}</p>"]
    demo_path = inputs.demo_truth
    if demo_path is None or not demo_path.is_file():
        return parts + [missing("Distance to the model reference", demo_path or Path("data/demo/truth.parquet"),
                                "only the embedded demo has a model reference")]
    demo = pd.read_parquet(demo_path)
    if scores is not None:
        levels = demo.groupby("video_id").difficulty.first().rename("difficulty").reset_index()
        by_level = (scores.merge(levels, on="video_id").groupby("difficulty")
                    .agg(videos=("video_id", "size"), uncertainty=("uncertainty", "mean"),
                         hard=("subset", lambda s: int((s == "hard").sum()))).reset_index())
        summary["uncertainty_by_level"] = by_level.to_dict("records")
        parts += ["<h3>Uncertainty and hard-subset share by difficulty level</h3>", _table(by_level)]
    if ann is not None:
        distance = label_reference_distance(ann, demo)
        summary["label_reference_distance"] = distance.to_dict("records")
        fig = _figure(out, "label_reference_distance", plots.label_reference_distance, distance,
                      "Consensus labels' distance (%) to the model reference per demo level, valid frames "
                      "(model output, not truth)", made)
        parts += ["<h3>Consensus distance to the model reference (% inter-ocular) per level</h3>",
                  _row(_table(distance), fig)]
    else:
        parts.append(missing("Distance to the model reference", inputs.manifests / "annotations.parquet",
                             "run the annotate stage"))
    lm_path = inputs.manifests / "landmarks.parquet"
    if lm_path.is_file():
        ids = sorted(set(demo.video_id))
        lm = pq.read_table(lm_path, columns=["video_id", "frame", "model", "family", "wflw98", "mask"],
                           filters=[("video_id", "in", ids)]).to_pandas()
        per_model = model_reference_distance(lm, ann, demo)
        summary["model_reference_distance"] = per_model.to_dict("records")
        fig = _figure(out, "model_reference_distance", plots.model_reference_distance, per_model,
                      "Each model's distance (%) to the model reference per level, over the points it defines", made)
        table = per_model.pivot_table(index=["model", "family"], columns="difficulty", values="reference_distance",
                                      sort=False)
        table.columns = [f"level {c}" for c in table.columns]
        parts += ["<h3>Per-model distance to the model reference (% inter-ocular) per level</h3>",
                  _row(_table(table.reset_index()), fig)]
    else:
        parts.append(missing("Per-model distance to the model reference", lm_path, "run the label stage"))
    return parts


def _ldeq_sections(inputs: ReportInputs, out: Path, made: dict[str, str], summary: dict[str, Any],
                   missing: Any) -> list[str]:
    parts = ["<h2>LDEQ on video (NME %, NMF)</h2>"]
    metrics = inputs.metrics / "evaluate.json"
    if metrics.is_file():
        evaluation = json.loads(metrics.read_text())
        rows = _ldeq_rows(evaluation)
        summary["ldeq"] = rows
        parts.append(_table(pd.DataFrame(rows)))
        parts.append(f"<p>{html.escape(_gamma_note(evaluation))}</p>")
        filters = _filter_table(evaluation)
        cost = _cost_table(evaluation)
        parts += ["<h3>Filter constants</h3>",
                  _table(filters) if not filters.empty else "<p>No filter tuned.</p>",
                  "<h3>RwR cost</h3>", _table(cost) if not cost.empty else "<p>No cost recorded.</p>"]
    else:
        parts.append(missing("LDEQ results", metrics, "run the evaluate stage"))
    figures = []
    for name, file, make, caption in (
            ("ced", "ced.csv", plots.ced_curves, "CED on the hard frames: from scratch vs RwR"),
            ("nmf_per_video", "nmf_per_video.csv", plots.nmf_scatter, "NMF per video: from scratch vs RwR"),
            ("train_loss", "train_loss.csv", plots.train_loss, "Training loss")):
        table = _read(inputs.plots / file)
        figures.append(_figure(out, name, make, table, caption, made) if table is not None
                       else missing(caption, inputs.plots / file, "run the train and evaluate stages"))
    parts.append(_row(*figures))
    return parts


def _filter_table(evaluation: dict[str, Any]) -> pd.DataFrame:
    """One row per filter constant: its value tuned on the easy videos and, where evaluated, on the hard ones."""
    easy, hard = evaluation.get("filters") or {}, evaluation.get("filters_tuned_on_hard") or {}
    rows = [{"filter": kind, "constant": name, "tuned on easy": value,
             "tuned on hard (optimistic bound)": hard.get(kind, {}).get(name)}
            for kind, constants in easy.items() for name, value in constants.items()]
    return pd.DataFrame(rows)


def _cost_table(evaluation: dict[str, Any]) -> pd.DataFrame:
    """Calls of the equilibrium function f per frame, from scratch and with RwR, and their ratio."""
    calls = (evaluation.get("rwr_cost") or {}).get("calls_per_frame") or {}
    names = {"scratch": "from scratch", "rwr": "RwR"}
    rows = [{"method": names.get(m, m), "calls of f per frame": v} for m, v in calls.items()]
    if calls.get("scratch") and "rwr" in calls:
        rows.append({"method": "RwR / from scratch", "calls of f per frame": calls["rwr"] / calls["scratch"]})
    return pd.DataFrame(rows)


def _gamma_note(evaluation: dict[str, Any]) -> str:
    """What the ``rwr_prox`` rows are: with the tuned γ = 0 they are the ``rwr`` rows again, and the page says why."""
    tuned = evaluation.get("rwr_gamma") or {}
    gamma = tuned.get("chosen")
    if gamma is None:
        return "rwr_prox: no proximal weight γ recorded."
    tried = ", ".join(f"γ {float(g):g}: {v:.4f}" for g, v in (tuned.get("objective") or {}).items())
    searched = f" (tuning objective on the easy videos, lower is better: {tried})" if tried else ""
    if float(gamma) == 0:
        return ("rwr_prox repeats rwr: the proximal weight γ tuned on the easy videos is 0" + searched + ", and with "
                "γ = 0 the proximal step z ← (f(z) + γ z*ₜ₋₁)/(1 + γ) is the plain RwR step, so both rows come from "
                "the same predictions.")
    return f"rwr_prox: RwR with the proximal anchor, γ = {float(gamma):g}{searched}."
