"""Every manifest's pyarrow schema, in one place.

Conventions shared by all manifests (also stored in each file's schema metadata):

* ``frame`` is the 0-based index of a *decoded* frame of the trimmed clip; clip frame ``k`` is source frame
  ``start_frame + k``. ``start_frame``/``end_frame`` are 0-based, inclusive, decoded-frame indices of the source
  video, as in the official WFLW-V list.
* Coordinates are pixels of the clip frame, x to the right, y down, pixel centres at integer coordinates.
* Boxes are ``x1, y1, x2, y2`` in those pixels.
* Landmark arrays are lists of ``[x, y]`` pairs; the scheme (point layout) is named in a column or in metadata.
* ``status`` is ``"ok"`` or one of :data:`STATUSES`; failures carry a human-readable ``error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "SCHEMAS", "schema", "POINT", "POINTS", "valid_flags", "error_status",
]

SCHEMA_VERSION = "2.0"

#: Status classes a per-video row may carry. ``skipped`` means an upstream stage failed for that video.
STATUSES = (
    "ok", "unavailable", "private", "geo", "forbidden", "rate_limited", "needs_auth", "network_error",
    "download_error", "decode_error", "bad_window", "no_face", "model_error", "skipped", "error",
    "server_error", "timeout", "truncated", "too_large", "no_video_stream", "unsupported", "licence_filtered",
    "unlabelable",
)

POINT = pa.list_(pa.float32(), 2)
POINTS = pa.list_(POINT)
BOX = [pa.field(n, pa.float32()) for n in ("x1", "y1", "x2", "y2")]

_CONVENTIONS = {
    "frame_index": "0-based decoded-frame index within the clip; clip frame k = source frame start_frame + k",
    "source_window": "start_frame, end_frame: 0-based inclusive decoded-frame indices of the source video",
    "coordinates": "clip-frame pixels, x right, y down, pixel centres at integers",
    "box": "x1, y1, x2, y2 in clip-frame pixels",
}


def _schema(name: str, fields: list[pa.Field], **extra: str) -> pa.Schema:
    meta = {"manifest": name, "schema_version": SCHEMA_VERSION, **_CONVENTIONS, **extra}
    return pa.schema(fields, metadata={k: str(v) for k, v in meta.items()})


def _status_fields() -> list[pa.Field]:
    return [pa.field("status", pa.string(), nullable=False), pa.field("error", pa.string())]


SCHEMAS: dict[str, pa.Schema] = {
    "sources": _schema("sources", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),
        pa.field("official_subset", pa.string()),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int32(), nullable=False),
        pa.field("content_sha256", pa.string()),
    ], content_sha256="SHA-256 of a project file behind a file: URL (null for web sources or a missing file): "
                      "editing the file changes this manifest, so DVC re-runs the download"),
    "downloads": _schema("downloads", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        *_status_fields(),
        pa.field("path", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("extractor", pa.string()),
        pa.field("format_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("vcodec", pa.string()),
        pa.field("ytdlp_version", pa.string()),
        pa.field("attempts", pa.int16()),
        pa.field("license", pa.string()),
        pa.field("uploader", pa.string()),
        pa.field("upload_date", pa.string()),
        pa.field("title", pa.string()),
        pa.field("webpage_url", pa.string()),
    ], attempts="yt-dlp runs for this video (retries of transient failures included)",
        provenance="license, uploader, upload_date (YYYYMMDD), title, webpage_url as yt-dlp reports them"),
    "clips": _schema("clips", [
        pa.field("video_id", pa.string(), nullable=False),
        *_status_fields(),
        pa.field("path", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("n_frames", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("source_time_base", pa.string()),
        pa.field("source_pts", pa.list_(pa.int64())),
        pa.field("source_width", pa.int32()),
        pa.field("source_height", pa.int32()),
        pa.field("decode_mode", pa.string()),
        pa.field("decode_note", pa.string()),
    ], decode_mode="seek (keyframe before the window, frames matched by PTS index) | sequential (from frame 0)",
        padding="an odd source width/height is padded by one replicated column/row at the right/bottom"),
    "faces": _schema("faces", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
        pa.field("n_detections", pa.int16(), nullable=False),
        pa.field("det_score", pa.float32()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("roll", pa.float32()),
        pa.field("raw_box", pa.list_(pa.float32(), 4)),
        *BOX,
    ], box_smoothing="x1..y2 are the smoothed main-track box (zero-lag: filtered in both directions); raw_box is "
                     "the box this frame's source gave before smoothing (null where source is none)",
        source="detected (a detector found the face) | landmarks (box from the previous frame's landmarks) | "
               "interpolated (inside a gap of <= max_gap frames) | held (within max_gap frames of a track end) | "
               "none (no face: box is NaN)",
        valid="true where the box can be trusted to hold the main face (detected, landmarks, interpolated)",
        roll="in-plane head roll (degrees, image-left eye to image-right eye) where known"),
    "landmarks": _schema("landmarks", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("scheme", pa.string(), nullable=False),
        pa.field("points", POINTS, nullable=False),
        pa.field("confidence", pa.float32()),
        pa.field("wflw98", POINTS, nullable=False),
        pa.field("mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("licence", pa.string()),
        pa.field("mirror_disagreement", pa.float32()),
        pa.field("jitter_disagreement", pa.float32()),
    ], common_scheme="wflw98", mask="mask[i] is True where the model's native points define WFLW-98 point i",
        points="the model's native points from its crop of the box as given",
        wflw98="the label: WFLW-98 points of the passes that the model's label.tta mode averages (plain, mirrored, "
               "jittered)",
        mirror_disagreement="self-check, no ground truth: mean distance (inter-ocular units) between the plain pass "
                            "and the pass on the mirrored crop mapped back (left/right permuted); null: not run",
        jitter_disagreement="self-check: mean distance of the passes from label.jitter_boxes to the plain pass; "
                            "null: not run",
        frames="rows only for frames whose face box is valid and where the model found the face",
        licence="licence and terms of the model's weights (pipeline.models_store)"),
    "scores": _schema("scores", [
        pa.field("video_id", pa.string(), nullable=False),
        *_status_fields(),
        pa.field("uncertainty", pa.float64()),
        pa.field("n_frames", pa.int32()),
        pa.field("n_models", pa.int16()),
        pa.field("n_families", pa.int16()),
        pa.field("valid_share", pa.float32()),
        pa.field("disagreement", pa.float32()),
        pa.field("instability", pa.float32()),
        pa.field("confidence", pa.float32()),
        pa.field("self_disagreement", pa.float32()),
        pa.field("frame_valid", pa.list_(pa.bool_())),
        pa.field("frame_disagreement", pa.list_(pa.float32())),
        pa.field("frame_instability", pa.list_(pa.float32())),
        pa.field("frame_confidence", pa.list_(pa.float32())),
        pa.field("frame_self_disagreement", pa.list_(pa.float32())),
        pa.field("rank", pa.int32()),
        pa.field("subset", pa.string()),
    ], uncertainty="the per-video score (pipeline.uncertainty.video_score, weights in params score.weights): "
                   "w_d*disagreement + w_i*instability + w_s*self_disagreement + w_c*(1 - confidence) + "
                   "w_v*(1 - valid_share)",
        components="disagreement, instability, self_disagreement (the voting models' mirror/jitter self-checks): "
                   "means over valid frames (inter-ocular units); confidence: mean face "
                   "detector score over valid frames; frame_*: the same per clip frame (NaN where not defined), so "
                   "the score can be re-run without the models",
        status_unlabelable="fewer than score.min_valid_share of the frames are valid: no score, never hard",
        rank="1 = most uncertain", subset="hard (n_hard most uncertain) | easy (n_hard least) | null (in between)"),
    "annotations": _schema("annotations", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("subset", pa.string(), nullable=False),
        *BOX,
        pa.field("landmarks", POINTS, nullable=False),
        pa.field("n_models", pa.int16(), nullable=False),
        pa.field("disagreement", pa.float32()),
        pa.field("valid", pa.bool_()),
        pa.field("landmarks_raw", POINTS),
        pa.field("n_families", pa.int16()),
        pa.field("support", pa.list_(pa.int8())),
        pa.field("instability", pa.float32()),
        pa.field("confidence", pa.float32()),
        pa.field("self_disagreement", pa.float32()),
        pa.field("excluded_models", pa.int16()),
        pa.field("box_source", pa.string()),
        pa.field("label_source", pa.string()),
    ], landmark_scheme="wflw98",
        landmarks="the robust family consensus, smoothed in time over valid frames (landmarks_raw: before smoothing); "
                  "NaN where no model labelled the frame",
        valid="box valid (faces stage), >= score.min_families families agree, on >= score.min_point_agreement of "
              "the points, and no collapse; invalid frames are kept with valid=false, never dropped (null: written by "
              "an older writer)",
        self_disagreement="the voting models' mean self-check disagreement (mirror, box jitter; inter-ocular units)",
        excluded_models="models that labelled the frame but did not vote: their self-disagreement passed "
                        "score.max_self_disagreement",
        n_models="models that labelled this frame", support="per WFLW-98 point, families within the agreement "
                                                              "distance of the consensus",
        label_source="human (a person's points from corrections/, valid) | propagated (the pseudo-label plus the "
                     "offsets of the two corrected frames around it, interpolated in time) | pseudo (the consensus "
                     "alone) | bridged (a short gap between valid frames: their labels carried by the box, "
                     "score.bridge_max_gap); null: written by an older writer"),
    "corrections": _schema("corrections", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("landmarks", POINTS, nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("annotated_at", pa.string(), nullable=False),
        pa.field("task_id", pa.int64()),
        pa.field("annotation_id", pa.int64()),
        pa.field("export_file", pa.string(), nullable=False),
    ], landmark_scheme="wflw98", source="a Label Studio JSON export read by `python -m pipeline.review import`",
        landmarks="a person's 98 points in clip-frame pixels; the annotate stage takes them for this frame",
        annotator="who submitted the annotation (the export's completed_by: e-mail, else user id)",
        annotated_at="when (the annotation's updated_at, else created_at, as the export writes it: ISO 8601); the "
                     "latest correction of a frame wins",
        task_id="Label Studio's task id", annotation_id="Label Studio's annotation id"),
    "video_status": _schema("video_status", [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        *_status_fields(),
        pa.field("n_frames", pa.int32()),
    ]),
    "demo_truth": _schema("demo_truth", [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("media", pa.string(), nullable=False),
        pa.field("difficulty", pa.int8(), nullable=False),
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("has_truth", pa.bool_(), nullable=False),
        pa.field("visible", pa.bool_()),
        *BOX,
        pa.field("reference_landmarks", POINTS),
    ], landmark_scheme="wflw98",
        scenario="camera | rolled (clean, head rolled 20-45°) | exit (face leaves, returns) | real (a window of a "
                 "real talking-face video: real motion, no truth)",
        truth="exact, from the known warp: the box x1..y2, visible, has_truth, difficulty, scenario",
        visible="at least half of the true face box lies inside the frame",
        reference_landmarks="the model reference, model output and not truth: dlib HOG box + dlib ERT-68 + MediaPipe "
                            "mesh measured once on the clean still (pipeline/demo/reference.py, reference.json), "
                            "carried through the known warp; two of the label stage's voters made it, so agreeing "
                            "with it is not accuracy"),
}


def schema(name: str) -> pa.Schema:
    """Return the schema of manifest ``name``; raise ``KeyError`` naming the known manifests otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown manifest {name!r}; known: {sorted(SCHEMAS)}") from None


def error_status(video_id: str, err: BaseException) -> dict[str, Any]:
    """The status of a video whose work raised ``err`` where nothing more specific applies (a dask ``on_error``):
    status ``error``, the exception's repr as the error."""
    return {"video_id": video_id, "status": "error", "error": repr(err)}


def valid_flags(rows: pa.Table | pd.DataFrame) -> np.ndarray:
    """The per-frame ``valid`` flags (N,) of annotation rows (a table or a data frame): a null or a missing ``valid``
    counts as valid, as the manifests written before the flag existed meant every frame."""
    if "valid" not in (rows.column_names if isinstance(rows, pa.Table) else rows.columns):
        return np.ones(len(rows), bool)
    if isinstance(rows, pa.Table):
        return np.asarray(rows.column("valid").fill_null(True).to_numpy(zero_copy_only=False), bool)
    return np.asarray(rows["valid"].fillna(True), bool)
