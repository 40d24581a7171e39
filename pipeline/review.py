"""Human review of the hard subset in Label Studio: ``python -m pipeline.review <export|import> --help``.

* ``export``: for the hard subset (or ``--videos``), the frames worth a person's time — keyframes spread over each
  video (at most ``review.keyframe_step`` frames apart, first and last labellable frame included) plus at most
  ``review.frames_per_video`` invalid or most uncertain frames, ``review.min_gap`` frames apart — as PNG images,
  a Label Studio task file with the consensus as pre-annotations (``predictions``: one keypoint per WFLW-98 point,
  named and grouped by region as in :data:`ldeq.wflw.REGION_POINTS`) and the labelling config to paste. Same inputs,
  same bytes.
* ``import EXPORT.json``: Label Studio's JSON export → ``corrections/<name>.parquet`` (the ``corrections``
  manifest: points, who, when), after checking every task; any problem is one line and nothing is written. The
  annotate stage merges the corrections (:mod:`pipeline.annotations`).

Coordinates: Label Studio stores a keypoint as percentages of the image's width and height measured from its
top-left corner; the manifests put pixel centres at integers, so ``x% = (x + 0.5) / width * 100``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ldeq.wflw import POINT_NAMES, REGION_POINTS
from pipeline.manifest import ManifestError, atomic_path, points_array, read_table, write_rows
from pipeline.params import ParamsError, ReviewParams, ScoreParams, stage_params
from pipeline.render import frame_uncertainty, read_video_rows
from pipeline.schemas import valid_flags
from pipeline.sources import safe_video_id
from pipeline.video import read_frames

__all__ = ["ChosenFrame", "choose_frames", "label_config", "frame_task", "export_review", "parse_export",
           "import_review", "main", "TASKS_FILE", "CONFIG_FILE"]

TASKS_FILE = "tasks.json"
CONFIG_FILE = "config.xml"
#: Keypoint control (one per region) → colour of its labels in Label Studio.
REGION_COLOURS = dict(zip(REGION_POINTS, ("#f58231", "#e6194b", "#f032e6", "#ffe119", "#bfef45", "#3cb44b",
                                          "#42d4f4", "#4363d8", "#911eb4", "#ffffff")))
_REGION_OF = {name: region for region, idx in REGION_POINTS.items() for name in
              (POINT_NAMES[i] for i in idx)}
_INDEX = {name: i for i, name in enumerate(POINT_NAMES)}
_MODEL_VERSION = "consensus"  # the predictions' model_version (Label Studio shows it as the pre-annotation source)


class ReviewError(ValueError):
    """Bad review input; the message is one or more lines, each naming the file, the task and what is wrong."""


@dataclass(frozen=True)
class ChosenFrame:
    frame: int
    reason: str  # "keyframe" | "invalid" | "uncertain"
    detail: str


def _spread(first: int, last: int, step: int) -> list[int]:
    """Evenly spaced frames from ``first`` to ``last`` (both included), at most ``step`` apart."""
    if last <= first:
        return [first]
    n = math.ceil((last - first) / step) + 1
    return sorted({int(round(v)) for v in np.linspace(first, last, n)})


def choose_frames(labellable: np.ndarray, valid: np.ndarray, uncertainty: np.ndarray, disagreement: np.ndarray,
                  done: np.ndarray, params: ReviewParams) -> list[ChosenFrame]:
    """The frames of one video to review (arrays indexed by clip frame).

    ``labellable``: the frame has a face box and a complete consensus inside the image (a person can place all 98
    points there); ``done``: already corrected by a person (never sent again). Keyframes are spread over the
    labellable span and snapped to the nearest labellable frame; then invalid frames (most family disagreement
    first) and the most uncertain valid frames are added, each at least ``min_gap`` frames from every chosen one,
    up to ``frames_per_video``.
    """
    usable = np.flatnonzero(labellable)
    if usable.size == 0:
        return []
    chosen: dict[int, ChosenFrame] = {}
    for target in _spread(int(usable[0]), int(usable[-1]), params.keyframe_step):
        frame = int(usable[np.argmin(np.abs(usable - target))])  # ties: the earlier frame
        chosen.setdefault(frame, ChosenFrame(frame, "keyframe", f"spread over the video, <= {params.keyframe_step} "
                                                                 "frames apart"))
    spots = list(chosen)
    candidates = [f for f in usable.tolist() if f not in chosen and not done[f]]
    disagree = np.nan_to_num(disagreement, nan=-np.inf)
    order = sorted(candidates, key=lambda f: (bool(valid[f]), -disagree[f] if not valid[f] else
                                              -np.nan_to_num(uncertainty[f], nan=-np.inf), f))
    picked = 0
    for frame in order:
        if picked >= params.frames_per_video:
            break
        if any(abs(frame - s) < params.min_gap for s in spots):
            continue
        if valid[frame]:
            chosen[frame] = ChosenFrame(frame, "uncertain", f"uncertainty {uncertainty[frame]:.3f}")
        else:
            detail = (f"families disagree: {disagreement[frame]:.3f}" if np.isfinite(disagreement[frame])
                      else "fewer than two families labelled it")
            chosen[frame] = ChosenFrame(frame, "invalid", detail)
        spots.append(frame)
        picked += 1
    return [chosen[f] for f in sorted(chosen) if not done[f]]


#: What the reviewer is asked to do (shown above the image).
_HOW = ("Drag each point onto the face (left/right as seen in the image); all 98 points must stay in the image. "
        "Submit when the face is right, also when nothing needed moving.")


def label_config() -> str:
    """The Label Studio labelling config: the image and one keypoint control per WFLW-98 region, labels named
    :data:`ldeq.wflw.POINT_NAMES`."""
    controls = []
    for region, idx in REGION_POINTS.items():
        labels = "".join(f'\n      <Label value="{POINT_NAMES[i]}" background="{REGION_COLOURS[region]}"/>'
                         for i in idx)
        controls.append(f'    <Header value="{region}" size="6"/>\n    <KeyPointLabels name="{region}" toName="image" '
                        f'strokeWidth="1" opacity="0.9" smart="false">{labels}\n    </KeyPointLabels>')
    return ('<View>\n  <Header value="$title"/>\n'
            f'  <Header value="{_HOW}" size="6"/>\n'
            '  <View style="display: flex; align-items: flex-start; gap: 1em;">\n'
            '   <View style="flex: 3;">\n'
            '    <Image name="image" value="$image" zoom="true" zoomControl="true" rotateControl="false"/>\n'
            '   </View>\n   <View style="flex: 2; max-height: 80vh; overflow-y: auto;">\n'
            + "\n".join(controls) + '\n   </View>\n  </View>\n</View>\n')


def frame_task(video_id: str, frame: int, image_url: str, size: tuple[int, int], points: np.ndarray,
               why: ChosenFrame, uncertainty: float | None) -> dict[str, Any]:
    """One Label Studio task: the image, the ids and why it was chosen in ``data``, the consensus as a prediction."""
    width, height = size
    result = []
    for i, name in enumerate(POINT_NAMES):
        x, y = (float(v) for v in points[i])
        result.append({
            "id": name, "from_name": _REGION_OF[name], "to_name": "image", "type": "keypointlabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": round((x + 0.5) / width * 100, 4), "y": round((y + 0.5) / height * 100, 4),
                      "width": 0.4, "keypointlabels": [name]},
        })
    data = {"image": image_url, "video_id": video_id, "frame": frame, "width": width, "height": height,
            "reason": why.reason, "detail": why.detail, "uncertainty": None if uncertainty is None
            else round(uncertainty, 6), "title": f"{video_id} · frame {frame} · {why.reason} ({why.detail})"}
    # no prediction score: Label Studio reads it as the model's confidence, and this is no model's
    return {"data": data, "predictions": [{"model_version": _MODEL_VERSION, "result": result}]}


def _image_url(prefix: str, path: Path) -> str:
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        raise ReviewError(f"{path}: the review export must lie inside the project (Label Studio serves it from "
                          "the project root)") from None
    return prefix + rel.as_posix()


def _video_inputs(video_id: str, manifests: Path) -> dict[str, Any]:
    clips = read_video_rows(manifests / "clips.parquet", "clips", video_id)
    ann = read_video_rows(manifests / "annotations.parquet", "annotations", video_id)
    faces = read_video_rows(manifests / "faces.parquet", "faces", video_id, ["frame", "valid"])
    for table, name in ((clips, "clips"), (ann, "annotations"), (faces, "faces")):
        if table is None:
            raise ManifestError(f"{manifests / (name + '.parquet')}: manifest not found (run `dvc repro annotate`)")
        if len(table) == 0:
            raise ManifestError(f"{manifests / (name + '.parquet')}: no rows for video {video_id!r}")
    assert clips is not None and ann is not None and faces is not None
    clip = clips.to_pylist()[0]
    return {"clip": clip, "ann": ann, "faces": faces}


def export_review(video_ids: list[str] | None, manifests: Path, out: Path, params: ReviewParams,
                  score: ScoreParams) -> dict[str, Any]:
    """Write ``out/{tasks.json, config.xml, images/<video>/<frame>.png}`` and return what was chosen and why.

    ``video_ids`` None = the hard subset of ``manifests/scores.parquet``. Images of an earlier export that are no
    longer chosen are removed, so the folder is always exactly this export.
    """
    scores = read_table(manifests / "scores.parquet", "scores").to_pylist()
    by_id = {r["video_id"]: r for r in scores}
    if video_ids is None:
        video_ids = sorted(r["video_id"] for r in scores if r["subset"] == "hard")
    unknown = [v for v in video_ids if v not in by_id]
    if unknown:
        raise ReviewError(f"{manifests / 'scores.parquet'}: no video(s) {', '.join(unknown)}")
    tasks: list[dict[str, Any]] = []
    written: set[Path] = set()
    counts: Counter[str] = Counter()
    for video_id in sorted(dict.fromkeys(video_ids)):
        inputs = _video_inputs(video_id, manifests)
        clip, ann = inputs["clip"], inputs["ann"]
        if clip["status"] != "ok":
            raise ReviewError(f"{manifests / 'clips.parquet'}: video {video_id} has no clip ({clip['status']})")
        n, width, height = int(clip["n_frames"]), int(clip["width"]), int(clip["height"])
        points = np.full((n, 98, 2), np.nan, np.float32)
        valid, done = np.zeros(n, bool), np.zeros(n, bool)
        frames = np.asarray(ann.column("frame").to_numpy(), np.int64)
        points[frames] = points_array(ann.column("landmarks"))
        sources = ann.column("label_source").to_pylist()
        # a bridged frame's label was carried over from its neighbours, its own consensus did not stand: review it
        valid[frames] = valid_flags(ann) & np.array([s != "bridged" for s in sources], bool)
        done[frames] = [s == "human" for s in sources]
        box_ok = np.zeros(n, bool)
        box_ok[np.asarray(inputs["faces"].column("frame").to_numpy(), np.int64)] = np.asarray(
            inputs["faces"].column("valid").to_numpy(zero_copy_only=False), bool)
        inside = ((points[..., 0] >= -0.5) & (points[..., 0] <= width - 0.5) & (points[..., 1] >= -0.5)
                  & (points[..., 1] <= height - 0.5)).all(axis=1)  # NaN compares False: incomplete frames drop out
        row = by_id[video_id]
        u = np.resize(np.r_[frame_uncertainty(row, score), np.full(n, np.nan)], n)
        dis = np.resize(np.r_[np.asarray(row["frame_disagreement"] or [], np.float64), np.full(n, np.nan)], n)
        picks = choose_frames(box_ok & inside, valid, u, dis, done, params)
        if not picks:
            continue
        rgb = read_frames(clip["path"], [p.frame for p in picks])
        for pick, image in zip(picks, rgb):
            path = out / "images" / safe_video_id(video_id) / f"{pick.frame:06d}.png"
            ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ReviewError(f"{path}: PNG encoding failed")
            if not path.is_file() or path.read_bytes() != png.tobytes():  # re-runs leave identical files alone
                with atomic_path(path) as tmp:
                    tmp.write_bytes(png.tobytes())
            written.add(path)
            score_u = float(u[pick.frame]) if np.isfinite(u[pick.frame]) else None
            tasks.append(frame_task(video_id, pick.frame, _image_url(params.image_url_prefix, path), (width, height),
                                    points[pick.frame], pick, score_u))
            counts[pick.reason] += 1
    for stale in sorted((out / "images").glob("*/*.png")) if (out / "images").is_dir() else []:
        if stale not in written:
            stale.unlink()
    with atomic_path(out / TASKS_FILE) as tmp:
        tmp.write_text(json.dumps(tasks, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    with atomic_path(out / CONFIG_FILE) as tmp:
        tmp.write_text(label_config(), encoding="utf-8")
    return {"videos": len({t["data"]["video_id"] for t in tasks}), "asked": len(video_ids), "frames": len(tasks),
            "by_reason": dict(sorted(counts.items())), "out": str(out)}


def _annotator(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("email") or f"user {value.get('id')}")
    return f"user {value}"


def _latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)))


def _task_rows(task: Any, k: int, known: dict[tuple[str, int], dict[str, Any]], where: str,
               export_file: str) -> tuple[dict[str, Any] | None, list[str]]:
    """One exported task → a corrections row (None when nobody submitted it) and its problems (one line each)."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return None, [f"{where}: item {k}: not a Label Studio task (no data)"]
    data = task["data"]
    name = f"task {task.get('id', f'#{k}')}"
    video_id, frame = data.get("video_id"), data.get("frame")
    if not isinstance(video_id, str) or not isinstance(frame, int) or (video_id, frame) not in known:
        return None, [f"{where}: {name} ({video_id} frame {frame}): unknown task: not in the review export's "
                      f"{TASKS_FILE}"]
    name = f"{name} ({video_id} frame {frame})"
    annotation = _latest_annotation(task)
    if annotation is None:
        return None, []
    width, height = (int(known[(video_id, frame)][key]) for key in ("width", "height"))
    points = np.full((98, 2), np.nan)
    problems: list[str] = []
    placed: Counter[str] = Counter()
    outside = []
    for item in annotation.get("result") or []:
        if not isinstance(item, dict) or item.get("type") != "keypointlabels":
            continue
        value = item.get("value") or {}
        labels = value.get("keypointlabels") or []
        label = labels[0] if len(labels) == 1 else None
        if label not in _INDEX:
            problems.append(f"{where}: {name}: unknown point label {labels!r} (the labelling config names the 98 "
                            "WFLW points)")
            continue
        size = (item.get("original_width", width), item.get("original_height", height))
        if size != (width, height):
            problems.append(f"{where}: {name}: {label} was placed on a {size[0]}x{size[1]} image; the exported frame "
                            f"is {width}x{height}")
            continue
        try:
            px, py = float(value["x"]), float(value["y"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: {name}: {label} has no numeric x/y")
            continue
        placed[label] += 1
        if not (0 <= px <= 100 and 0 <= py <= 100):
            outside.append(f"{label} ({px:.1f}%, {py:.1f}%)")
        points[_INDEX[label]] = (px / 100 * width - 0.5, py / 100 * height - 0.5)
    twice = sorted((n for n, c in placed.items() if c > 1), key=_INDEX.__getitem__)
    if twice:
        problems.append(f"{where}: {name}: point(s) placed more than once: {', '.join(twice)}")
    missing = [n for n in POINT_NAMES if n not in placed]
    if missing:
        shown = ", ".join(missing[:12]) + (f" … ({len(missing)} in all)" if len(missing) > 12 else "")
        problems.append(f"{where}: {name}: missing point(s) {shown}: all 98 must be placed")
    if outside:
        problems.append(f"{where}: {name}: point(s) outside the {width}x{height} image: {', '.join(outside)}")
    if problems:
        return None, problems
    when = annotation.get("updated_at") or annotation.get("created_at")
    if not isinstance(when, str) or not when:
        return None, [f"{where}: {name}: the annotation has no updated_at/created_at time"]
    return {"video_id": video_id, "frame": frame, "landmarks": points.astype(np.float32), "width": width,
            "height": height, "annotator": _annotator(annotation.get("completed_by")), "annotated_at": when,
            "task_id": task.get("id"), "annotation_id": annotation.get("id"), "export_file": export_file}, []


def parse_export(export: Path, tasks_file: Path) -> tuple[list[dict[str, Any]], int]:
    """Read a Label Studio JSON export against the review export's task file.

    Returns the corrections rows (one per task somebody submitted; the latest non-skipped annotation counts) and the
    number of tasks nobody submitted. Raises :class:`ReviewError` with one line per problem: unknown task, missing
    or repeated points, points outside the image, unknown labels.
    """
    try:
        known = {(t["data"]["video_id"], t["data"]["frame"]): t["data"]
                 for t in json.loads(tasks_file.read_text(encoding="utf-8"))}
    except FileNotFoundError:
        raise ReviewError(f"{tasks_file}: task file not found (run `python -m pipeline.review export` first, or "
                          "give --tasks)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReviewError(f"{tasks_file}: not a review task file: {err}") from None
    try:
        items = json.loads(export.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(f"{export}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReviewError(f"{export}: not JSON: {err}") from None
    if not isinstance(items, list):
        raise ReviewError(f"{export}: not a Label Studio JSON export (expected a list of tasks, found "
                          f"{type(items).__name__}); export the project as JSON")
    rows, problems, open_tasks = [], [], 0
    seen: dict[tuple[str, int], str] = {}
    for k, task in enumerate(items):
        row, issues = _task_rows(task, k, known, str(export), export.name)
        problems += issues
        if row is None:
            open_tasks += not issues
            continue
        key = (row["video_id"], row["frame"])
        if key in seen:
            problems.append(f"{export}: task {row['task_id']} ({key[0]} frame {key[1]}): the same frame as task "
                            f"{seen[key]}")
            continue
        seen[key] = str(row["task_id"])
        rows.append(row)
    if problems:
        raise ReviewError("\n".join(problems))
    return sorted(rows, key=lambda r: (r["video_id"], r["frame"])), open_tasks


def import_review(export: Path, tasks_file: Path, corrections: Path, name: str | None) -> dict[str, Any]:
    """Check ``export`` and write its corrections to ``corrections/<name>.parquet`` (atomically; nothing on error)."""
    rows, open_tasks = parse_export(export, tasks_file)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or export.stem).strip("._") or "review"
    out = corrections / f"{stem}.parquet"
    if rows:
        write_rows(rows, "corrections", out)
    return {"frames": len(rows), "videos": len({r["video_id"] for r in rows}), "not_submitted": open_tasks,
            "annotators": sorted({r["annotator"] for r in rows}), "out": str(out) if rows else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    exp = sub.add_parser("export", help="frames to review as Label Studio tasks, images and labelling config",
                         description="Choose frames to review (keyframes + invalid/uncertain frames) and write "
                                     "images, tasks.json (consensus as pre-annotations) and config.xml.")
    exp.add_argument("--videos", nargs="+", metavar="VIDEO_ID", help="these videos instead of the hard subset")
    exp.add_argument("--manifests", type=Path, default=Path("manifests"))
    exp.add_argument("--out", type=Path, help="output folder (default: review.export_dir)")
    imp = sub.add_parser("import", help="a Label Studio JSON export -> corrections/ (checked, atomic)",
                         description="Check a Label Studio JSON export against the review tasks and write its "
                                     "corrections to <annotate.corrections>/<name>.parquet.")
    imp.add_argument("export", type=Path, help="the JSON file Label Studio exported (Export → JSON)")
    imp.add_argument("--tasks", type=Path, help=f"the review's {TASKS_FILE} (default: in review.export_dir)")
    imp.add_argument("--corrections", type=Path, help="corrections folder (default: annotate.corrections)")
    imp.add_argument("--name", help="file name in the corrections folder (default: the export's name)")
    for command in (exp, imp):
        command.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        review = stage_params("review", args.params)
        if args.cmd == "export":
            out = args.out or Path(review.export_dir)
            done = export_review(args.videos, args.manifests, out, review, stage_params("score", args.params))
            reasons = ", ".join(f"{n} {r}" for r, n in done["by_reason"].items()) or "none"
            print(f"review export: {done['frames']} frames of {done['videos']} video(s) ({reasons}) -> "
                  f"{out / TASKS_FILE}, {out / CONFIG_FILE}, {out / 'images'}/")
        else:
            tasks = args.tasks or Path(review.export_dir) / TASKS_FILE
            folder = args.corrections or Path(stage_params("annotate", args.params).corrections)
            done = import_review(args.export, tasks, folder, args.name)
            where = f"-> {done['out']}" if done["out"] else "(nothing written)"
            print(f"review import: {done['frames']} corrected frames of {done['videos']} video(s) by "
                  f"{', '.join(done['annotators']) or 'nobody'}; {done['not_submitted']} tasks not submitted "
                  f"{where}")
    except (ReviewError, ManifestError, ParamsError, OSError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
