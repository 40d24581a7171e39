"""The dataset card (``data/wflw_v/README.md``): what was built, from what, how its labels were made, how good they
are by the only yardsticks a run has, under which licences, and what it cannot do. Hugging Face dataset-card layout
(YAML header + sections) with the questions of *Datasheets for Datasets* (Gebru et al.).

Every figure is computed from the manifests the annotate stage writes or reads, so the card is the same bytes
whenever the manifests are (no build time, no host, no absolute path): it travels inside the export, whose hash DVC
records. The code is identified by the digest of the annotate stage's import closure and the params by a digest of
the blocks it reads (``annotate``, ``score``); everything upstream is pinned by the SHA-256 of each input manifest.
The git commit is not written: it changes with every commit, even one that changes nothing built. The commit whose
``dvc.lock`` records this export's hash is the one that built it.

Two yardsticks for the landmark labels, kept apart by name, as in the report: people's corrections (frames a reviewer
fixed: NME of the label *before* the correction against the person's points) are truth; the demo's model reference
(dlib ERT-68 + MediaPipe mesh on the clean stills, carried through the known warp) is model output, so distance to it
is agreement with two of the voters, never accuracy. The demo's boxes are exact geometry and are truth.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ldeq.metrics import nme
from pipeline.manifest import atomic_path, points_array, sha256_file
from pipeline.params import AnnotateParams, ScoreParams
from pipeline.runcache import code_digest

__all__ = ["CardInputs", "card_facts", "render_card", "write_card", "STAGE_ORDER", "MODEL_TERMS", "LDEQ_TERMS"]

#: The per-video stages in chain order, with the manifest holding each one's status rows.
STAGE_ORDER = ("download", "trim", "faces", "label", "score", "annotate")

#: Terms of the models whose output is in the labels, beyond the weights' licence the landmarks manifest records.
MODEL_TERMS = {
    "dlib_ert": "dlib's 68-point model was trained on iBUG 300-W, whose terms allow research use only: labels that "
                "carry its output are not for commercial use",
}
#: The LDEQ weights are not in the labels but are what the pipeline trains and evaluates with.
LDEQ_TERMS = ("LDEQ's released weights (polo5/LDEQ_RwR) are under NVIDIA's non-commercial licence; the train "
              "stage's own weights are trained from scratch on this dataset's easy subset")


@dataclass(frozen=True)
class CardInputs:
    """Where the card's figures come from (a missing file is said in the card, never an error)."""

    export_dir: Path
    sources: Path
    downloads: Path
    clips: Path
    faces_status: Path
    label_status: Path
    scores: Path
    annotations: Path
    landmarks: Path
    demo_truth: Path | None
    annotate_status: Sequence[Mapping[str, Any]]  # this run's annotate status rows (written beside the card)


def _table(path: Path | None, columns: list[str]) -> list[dict[str, Any]] | None:
    if path is None or not Path(path).is_file():
        return None
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in columns if c in names]).to_pylist()


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _status_rows(inputs: CardInputs) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stage, ``{video_id: status row}``."""
    sources = {"download": inputs.downloads, "trim": inputs.clips, "faces": inputs.faces_status,
               "label": inputs.label_status, "score": inputs.scores}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stage, path in sources.items():
        rows = _table(path, ["video_id", "status", "error"])
        if rows is not None:
            out[stage] = {r["video_id"]: r for r in rows}
    out["annotate"] = {str(r["video_id"]): dict(r) for r in inputs.annotate_status}
    return out


def _lost(statuses: dict[str, dict[str, dict[str, Any]]], ids: list[str], exported: set[str],
          scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every source video not in the export, with the first stage that did not pass it and why."""
    lost = []
    for vid in ids:
        if vid in exported:
            continue
        reason = None
        for stage in STAGE_ORDER:
            row = statuses.get(stage, {}).get(vid)
            if row is None:
                continue
            if row["status"] != "ok":
                reason = {"stage": stage, "status": row["status"], "error": row.get("error") or ""}
                break
        if reason is None:
            score = scores.get(vid, {})
            if score.get("status") == "ok" and not score.get("subset"):
                reason = {"stage": "score", "status": "between",
                          "error": f"rank {score.get('rank')}: neither among the most nor the least uncertain "
                                   "(score.n_hard)"}
            else:
                reason = {"stage": "?", "status": "missing", "error": "no status row in any manifest"}
        lost.append({"video_id": vid, **reason})
    return lost


def _nme_percent(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return 100 * nme(pred, ref)


def _reference_agreement(annotations: Path, exported: set[str], truth_path: Path | None) -> dict[str, Any]:
    """Per demo level: distance of the valid labels to the model reference (% inter-ocular), and the mean IoU of the
    valid frames' boxes with the exact demo boxes."""
    if truth_path is None or not Path(truth_path).is_file() or not Path(annotations).is_file():
        return {"available": False}
    names = pq.read_schema(truth_path).names
    column = "reference_landmarks" if "reference_landmarks" in names else "landmarks"
    truth = pq.read_table(truth_path, columns=["video_id", "frame", "difficulty", "has_truth", "x1", "y1", "x2", "y2",
                                               column])
    videos = sorted(exported & set(truth.column("video_id").to_pylist()))
    if not videos:
        return {"available": True, "levels": []}
    ann_names = pq.read_schema(annotations).names
    ann = pq.read_table(annotations, columns=[c for c in ("video_id", "frame", "valid", "landmarks", "x1", "y1", "x2",
                                                          "y2") if c in ann_names],
                        filters=[("video_id", "in", videos)])
    where = {(v, int(f)): i for i, (v, f) in enumerate(zip(truth.column("video_id").to_pylist(),
                                                           truth.column("frame").to_pylist()))}
    valid = ann.column("valid").to_pylist() if "valid" in ann_names else [True] * len(ann)
    pairs = [(i, where[(v, int(f))]) for i, (v, f, ok) in enumerate(zip(ann.column("video_id").to_pylist(),
                                                                        ann.column("frame").to_pylist(), valid))
             if ok is not False and (v, int(f)) in where]
    has = truth.column("has_truth").to_pylist()
    pairs = [(a, t) for a, t in pairs if has[t]]
    if not pairs:
        return {"available": True, "levels": []}
    a_idx, t_idx = np.array([a for a, _ in pairs]), np.array([t for _, t in pairs])
    level = np.asarray(truth.column("difficulty").to_numpy(zero_copy_only=False))[t_idx]
    pred = points_array(ann.column("landmarks").take(a_idx)).astype(np.float64)
    ref_column = truth.column(column).take(t_idx)
    has_ref = np.array([r is not None for r in ref_column.to_pylist()]) if ref_column.null_count else \
        np.ones(len(t_idx), bool)
    boxes = {k: (np.asarray(ann.column(k).take(a_idx).to_numpy(zero_copy_only=False), np.float64),
                 np.asarray(truth.column(k).take(t_idx).to_numpy(zero_copy_only=False), np.float64))
             for k in ("x1", "y1", "x2", "y2")}
    iou = _iou(*(np.stack([boxes[k][side] for k in ("x1", "y1", "x2", "y2")], axis=1) for side in (0, 1)))
    distance = np.full(len(t_idx), np.nan)
    if has_ref.any():
        ref = points_array(ref_column.filter(has_ref)).astype(np.float64)
        distance[has_ref] = _nme_percent(pred[has_ref], ref)
    out = []
    for lv in sorted(set(level.tolist())):
        use = level == lv
        d, b = distance[use], iou[use]
        out.append({"level": int(lv), "frames": int(use.sum()),
                    "reference_distance": float(np.nanmean(d)) if np.isfinite(d).any() else None,
                    "box_iou": float(np.nanmean(b)) if np.isfinite(b).any() else None})
    return {"available": True, "levels": out}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N, 4) x1, y1, x2, y2 row by row; NaN where a box is unknown or empty."""
    inter = (np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
             * np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None))
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def _corrections(annotations: Path, exported: set[str]) -> list[dict[str, Any]]:
    """Per subset: NME (% of the person's inter-ocular distance) of the consensus before correction and smoothing
    (``landmarks_raw``) against the person's points, on the frames a person corrected."""
    if not Path(annotations).is_file() or "label_source" not in pq.read_schema(annotations).names:
        return []
    human = pq.read_table(annotations, columns=["video_id", "subset", "landmarks", "landmarks_raw"],
                          filters=[("label_source", "=", "human")])
    keep = np.array([v in exported and r is not None for v, r in zip(human.column("video_id").to_pylist(),
                                                                      human.column("landmarks_raw").to_pylist())],
                    bool)
    if not keep.any():
        return []
    human = human.filter(keep)
    raw = points_array(human.column("landmarks_raw")).astype(np.float64)
    person = points_array(human.column("landmarks")).astype(np.float64)
    finite = np.isfinite(raw).all(axis=(1, 2))
    subsets = np.array(human.column("subset").to_pylist())
    out = []
    for subset in sorted(set(subsets[finite].tolist())):
        use = finite & (subsets == subset)
        out.append({"subset": subset, "frames": int(use.sum()),
                    "nme": float(_nme_percent(raw[use], person[use]).mean())})
    return out


def card_facts(inputs: CardInputs, annotate: AnnotateParams, score: ScoreParams) -> dict[str, Any]:
    """Every figure the card shows, as plain data (the test checks each against the manifests)."""
    statuses = _status_rows(inputs)
    sources = _table(inputs.sources, ["video_id", "url", "source_file", "official_subset"]) or []
    ids = [r["video_id"] for r in sources] or sorted(set().union(*(rows for rows in statuses.values())))
    scores = {r["video_id"]: r for r in _table(inputs.scores, ["video_id", "status", "rank", "subset",
                                                               "uncertainty"]) or []}
    annotations = _table(inputs.annotations, ["video_id", "subset", "valid", "label_source"]) or []
    exported = {v for v in scores if scores[v].get("subset")
                and (inputs.export_dir / "landmarks" / f"{v}.npy").is_file()}
    subsets: dict[str, dict[str, int]] = {}
    for row in annotations:
        if row["video_id"] not in exported:
            continue
        s = subsets.setdefault(row["subset"], {"videos": 0, "frames": 0, "valid_frames": 0})
        s["frames"] += 1
        s["valid_frames"] += int(row.get("valid") is not False)
    for vid in exported:
        subset = scores[vid]["subset"]
        subsets.setdefault(subset, {"videos": 0, "frames": 0, "valid_frames": 0})["videos"] += 1
    downloads = {r["video_id"]: r for r in _table(inputs.downloads, [
        "video_id", "url", "status", "license", "uploader", "upload_date", "webpage_url"]) or []}
    dates = sorted(d["upload_date"] for d in downloads.values() if d.get("upload_date"))
    models = _models(inputs.landmarks)
    digests = {name: sha256_file(path) for name, path in (
        ("sources", inputs.sources), ("downloads", inputs.downloads), ("clips", inputs.clips),
        ("faces_status", inputs.faces_status), ("label_status", inputs.label_status), ("scores", inputs.scores),
        ("landmarks", inputs.landmarks)) if Path(path).is_file()}
    return {
        "build": {"code": code_digest("stages.annotate"),
                  "params": _digest({"annotate": annotate.model_dump(), "score": score.model_dump()}),
                  "manifests": digests,
                  "source_lists": sorted(Counter(r["source_file"] for r in sources).items()),
                  "upload_dates": [dates[0], dates[-1]] if dates else None},
        "counts": {"sources": len(ids), "exported": len(exported), "subsets": dict(sorted(subsets.items())),
                   "status": {stage: dict(sorted(Counter(r["status"] for r in rows.values()).items()))
                              for stage, rows in statuses.items()}},
        "lost": _lost(statuses, ids, exported, scores),
        "label_sources": dict(sorted(Counter(r.get("label_source") or "pseudo" for r in annotations
                                             if r["video_id"] in exported).items())),
        "models": models,
        "score_params": score.model_dump(mode="json"),
        "reference": _reference_agreement(inputs.annotations, exported, inputs.demo_truth),
        "corrections": _corrections(inputs.annotations, exported),
        "licences": {"counts": dict(sorted(Counter(_licence(downloads.get(v)) for v in sorted(exported)).items())),
                     "videos": [{"video_id": v, "subset": scores[v]["subset"], "licence": _licence(downloads.get(v)),
                                 "uploader": (downloads.get(v) or {}).get("uploader"),
                                 "upload_date": (downloads.get(v) or {}).get("upload_date"),
                                 "url": (downloads.get(v) or {}).get("webpage_url") or (downloads.get(v) or {})
                                 .get("url")} for v in sorted(exported, key=lambda v: (scores[v]["subset"],
                                                                                       scores[v]["rank"]))]},
    }


def _licence(download: Mapping[str, Any] | None) -> str:
    if download is None:
        return "unknown (no download record)"
    return download.get("license") or "not stated by the source"


def _models(landmarks: Path) -> list[dict[str, Any]]:
    """Each model whose output is in the labels: family, scheme, licence of its weights, frames it labelled."""
    if not Path(landmarks).is_file():
        return []
    names = pq.read_schema(landmarks).names
    table = pq.read_table(landmarks, columns=[c for c in ("model", "family", "scheme", "licence") if c in names])
    counts: dict[tuple[str, ...], int] = Counter()
    for row in table.to_pylist():
        counts[(row["model"], row["family"], row["scheme"], row.get("licence") or "not recorded")] += 1
    meta = pq.read_schema(landmarks).metadata or {}
    runtimes = meta.get(b"produced_by", b"").decode() or None
    return [{"model": m, "family": f, "scheme": s, "licence": lic, "rows": n,
             "terms": MODEL_TERMS.get(f), "runtimes": runtimes} for (m, f, s, lic), n in sorted(counts.items())]


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)]


def render_card(facts: dict[str, Any]) -> str:
    """The card's Markdown from :func:`card_facts`."""
    counts, build = facts["counts"], facts["build"]
    total = counts["exported"]
    size = "n<1K" if total < 1000 else "1K<n<10K"
    lines = ["---", "pretty_name: WFLW-V (rebuilt by the WFLW-V pipeline)", "license: other",
             "task_categories:", "- keypoint-detection", "tags:", "- facial-landmarks", "- video", "- wflw-98",
             f"size_categories: {size}", "---", "",
             "# Dataset card: WFLW-V, rebuilt", "",
             "Videos of faces with 98 WFLW landmarks and a face box on every frame, split into the most uncertain "
             "(`hard`) and least uncertain (`easy`) videos, in the layout of the official WFLW-V release "
             "(Micaelli et al., CVPR 2023). Labels are **pseudo-labels**: the consensus of several landmark models, "
             "except on frames a person corrected. This card is generated by the annotate stage from the manifests "
             "(`pipeline/card.py`); every figure below is recomputed on each build.", "",
             "## Layout", "",
             *_rows(["file", "holds"], [
                 ["`videos/<id>.mp4`", "the clip; frame k of every array is its decoded frame k"],
                 ["`bboxes/<id>.npy`", "(F, 4) float32 face box x1, y1, x2, y2 in pixels (NaN where unknown)"],
                 ["`landmarks/<id>.npy`", "(F, 98, 2) float32 WFLW-98 points in pixels (NaN where unlabelled)"],
                 ["`valid/<id>.npy`", "(F,) bool: frames whose labels can be trusted; skip the others"],
                 ["`uncertainty/<id>.npy`", "(F,) float32 per-frame uncertainty (NaN on invalid frames)"],
                 ["`hard_video_IDs.txt`, `easy_video_IDs.txt`", "the split, most uncertain first"],
                 ["`split_uncertainty.csv`", "each listed video's score and its components"]]), "",
             "Load it with `ldeq.datasets.WFLWVideo(root, subset)` (PyTorch), evaluate a model with "
             "`python -m ldeq.evaluate --predictions DIR --annotations <this folder>`.", "",
             "## How it was built", "",
             f"- Code: annotate stage import closure, SHA-256 `{build['code'][:16]}`.",
             f"- Params (`annotate`, `score` blocks): SHA-256 `{build['params'][:16]}`.",
             "- Input manifests (SHA-256; each pins everything upstream of it): "
             + ", ".join(f"{k} `{v[:16]}`" for k, v in build["manifests"].items()) + ".",
             "- Source lists: " + (", ".join(f"`{f}` ({n} rows)" for f, n in build["source_lists"]) or "—") + ".",
             "- Upload dates of the sources: " + (f"{build['upload_dates'][0]} to {build['upload_dates'][1]}"
                                                  if build["upload_dates"] else
                                                  "not known (project files, or not reported by the source)") + ".",
             "- The git commit whose `dvc.lock` records this folder's hash is the one that built it.", "",
             "## Composition", "",
             f"{counts['sources']} source videos, {total} exported.", "",
             *_rows(["subset", "videos", "frames", "valid frames"],
                    [[s, v["videos"], v["frames"], v["valid_frames"]] for s, v in counts["subsets"].items()]), "",
             "Videos per stage and status:", "",
             *_rows(["stage", "statuses"], [[stage, ", ".join(f"{n} {s}" for s, n in c.items())]
                                            for stage, c in counts["status"].items()]), "",
             f"Every source video that is not in the export ({len(facts['lost'])}), and why:", "",
             *_rows(["video", "stage", "status", "reason"],
                    [[r["video_id"], r["stage"], r["status"], r["error"]] for r in facts["lost"]]), ""]
    lines += ["## How the labels were made", "",
              "Each model below labelled every frame whose face box is valid, fed the crop it was trained on; its "
              "points were mapped to WFLW-98. Models of one family vote once; a robust, region-weighted consensus "
              "of the families is the label, smoothed in time over valid runs. A frame is valid where its box is, "
              "enough families agree with the consensus on enough points and the shape did not collapse. Each "
              "video's uncertainty is the weighted sum of its components; the `n_hard` most uncertain are `hard`, "
              "as many least uncertain `easy`.", "",
              *_rows(["model", "family", "scheme", "rows", "licence of the weights"],
                     [[m["model"], m["family"], m["scheme"], m["rows"], m["licence"]] for m in facts["models"]]), "",
              *([f"Model runtimes (the landmarks manifest's `produced_by`): `{facts['models'][0]['runtimes']}`.", ""]
                if facts["models"] and facts["models"][0]["runtimes"] else []),
              "The score stage's rule (`score` params): "
              + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in facts["score_params"].items()) + ".", "",
              "Frames by where their points come from: "
              + ", ".join(f"{n} {s}" for s, n in facts["label_sources"].items()) + " (human: a person's points from "
              "`corrections/`; propagated: the pseudo-label moved by the corrections around it; bridged: a short "
              "invalid gap between valid frames, labels carried by the box; pseudo: the consensus alone).", "",
              "## Label quality", ""]
    if facts["corrections"]:
        lines += ["Against people's corrections (truth): NME, % of the person's inter-ocular distance, of the "
                  "consensus before correction and smoothing, on the frames a person corrected:", "",
                  *_rows(["subset", "corrected frames", "NME %"],
                         [[c["subset"], c["frames"], c["nme"]] for c in facts["corrections"]]), ""]
    else:
        lines += ["No frame was corrected by a person (`corrections/` is empty), so no label of this build is "
                  "measured against truth.", ""]
    reference = facts["reference"]
    if reference["available"] and reference["levels"]:
        lines += ["Agreement with the demo's model reference (dlib ERT-68 + MediaPipe mesh on the clean stills, "
                  "carried through the known warp): distance of the valid labels, % inter-ocular. The reference is "
                  "model output, two of the voters made it: this is agreement with them, not accuracy. The box IoU "
                  "is against the demo's exact boxes (truth).", "",
                  *_rows(["demo level", "valid frames", "distance to the model reference %", "box IoU"],
                         [[r["level"], r["frames"], r["reference_distance"], r["box_iou"]]
                          for r in reference["levels"]]), ""]
    else:
        lines += ["No demo reference covers these videos (only the embedded demo has one).", ""]
    lic = facts["licences"]
    lines += ["## Licences", "",
              "Source videos keep their own licences; the labels add the terms of the models that made them. "
              "Exported videos by licence (as the download provenance records it): "
              + ", ".join(f"{n} {s}" for s, n in lic["counts"].items()) + ".", "",
              "Models whose output is in the labels:", ""]
    for m in facts["models"]:
        lines.append(f"- `{m['model']}`: {m['licence']}" + (f". **{m['terms']}.**" if m["terms"] else "."))
    lines += [f"- {LDEQ_TERMS}.", "", "<details><summary>Every exported video's source and licence</summary>", "",
              *_rows(["video", "subset", "licence", "uploader", "upload date", "source"],
                     [[v["video_id"], v["subset"], v["licence"], v["uploader"], v["upload_date"], v["url"]]
                      for v in lic["videos"]]), "", "</details>", "",
              "## Known limits", "",
              "- Labels are model consensus, not human annotation, except `human` frames; where the models share a "
              "bias the consensus has it too, and the uncertainty cannot see it.",
              "- The split ranks this build's own uncertainty; it is not the official split, and a video's subset "
              "can change when a model or a param changes.",
              "- Invalid frames stay in the arrays (`valid` False): readers must skip them.",
              "- Label quality on the demo is agreement with a model reference; only people's corrections measure "
              "accuracy, and only on the frames they cover.",
              "- Frame k means the k-th decoded frame of the clip (0-based); the source window is in "
              "`manifests/clips.parquet`.", ""]
    return "\n".join(lines)


def write_card(inputs: CardInputs, annotate: AnnotateParams, score: ScoreParams,
               path: Path | None = None) -> dict[str, Any]:
    """Write the card (default ``<export_dir>/README.md``) atomically; return its facts."""
    facts = card_facts(inputs, annotate, score)
    with atomic_path(path or inputs.export_dir / "README.md") as tmp:
        tmp.write_text(render_card(facts), encoding="utf-8")
    return facts

