"""A small project for the review round trip, built the same way every time: a real clip of the astronaut's face
(scikit-image) panning sideways, WFLW-98 points that are this test's truth by construction (the demo's model
reference of the astronaut, carried through the pan: the simulated families err from them and the simulated person
places them), three model families that all err by a few pixels (so the consensus is off and a person's correction
shows), two frames where the families disagree (invalid), the same clip again where the families agree (the easy
video), and the score and annotate stages run on it.

``tests/fixtures/review/labelstudio_export.json`` is Label Studio's export of tasks made from this project, so the
video id, frame count and frame size here must not change without re-recording it (``make test-review``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from pipeline.manifest import read_table, write_rows
from pipeline.params import PROJECT_PARAMS
from pipeline.video import VideoWriter

VIDEO_ID = "astro"
CALM = "astro_calm"
N_FRAMES = 24
SIZE = (480, 360)  # the clip frame: a 240x180 cut of the photo, upscaled 2x
CUT = (110, 40)  # top-left of frame 0's cut; frame k's cut starts k pixels further left (the face moves right)
INVALID = (11, 12)  # frames where the families disagree
#: Each family's systematic error (px): the consensus ends up about (+2.5, +1.5) px off the truth.
FAMILY_BIAS = {"dlib_ert": (2.0, 1.0), "mediapipe_mesh": (3.0, 2.0), "faceapi_cnn": (2.5, 1.5)}
REVIEW = {"export_dir": "review", "frames_per_video": 2, "keyframe_step": 10, "min_gap": 3,
          "image_url_prefix": "/data/local-files/?d="}


def truth_points() -> np.ndarray:
    """(N_FRAMES, 98, 2) true points in clip-frame pixels (centres at integers: 2x upscale maps p to 2p + 0.5)."""
    from pipeline.demo.reference import load

    _, ref = load()["astronaut"]
    out = np.empty((N_FRAMES, 98, 2))
    for k in range(N_FRAMES):
        out[k] = 2 * (ref - [CUT[0] - k, CUT[1]]) + 0.5
    return out


def _frames() -> list[np.ndarray]:
    from skimage import data

    photo = data.astronaut()
    w, h = SIZE[0] // 2, SIZE[1] // 2
    return [cv2.resize(photo[CUT[1]:CUT[1] + h, CUT[0] - k:CUT[0] - k + w], SIZE, interpolation=cv2.INTER_LINEAR)
            for k in range(N_FRAMES)]


def build(root: Path) -> dict[str, Any]:
    """Write clip, manifests and params under ``root`` (the project root: run with it as the working directory),
    then run the real score and annotate stages. Returns the paths and the truth."""
    from stages import score as score_stage

    truth = truth_points()
    clip = root / "clips" / f"{VIDEO_ID}.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(clip, fps=25) as out:
        for rgb in _frames():
            out.write(rgb)
    rng = np.random.default_rng(0)
    landmarks, faces, clips, status = [], [], [], []
    # the same clip twice: VIDEO_ID as above (hard), and CALM where the families agree closely (easy)
    for video_id in (VIDEO_ID, CALM):
        for k in range(N_FRAMES):
            for j, (family, bias) in enumerate(FAMILY_BIAS.items()):
                if video_id == CALM:
                    pts = truth[k] + rng.normal(0, 0.05, (98, 2))
                else:
                    pts = truth[k] + bias + rng.normal(0, 0.3, (98, 2))
                    if k in INVALID:  # each family somewhere else: nobody agrees
                        pts = pts + [(-14.0, 6.0), (12.0, -9.0), (3.0, 15.0)][j]
                landmarks.append({"video_id": video_id, "frame": k, "model": f"{family}_model", "family": family,
                                  "scheme": "wflw98", "points": pts.astype(np.float32),
                                  "wflw98": pts.astype(np.float32), "mask": np.ones(98, bool), "confidence": 0.9})
            lo, hi = truth[k].min(0) - 12, truth[k].max(0) + 12
            faces.append({"video_id": video_id, "frame": k, "track_id": 0, "detector": "retinaface",
                          "n_detections": 1, "det_score": 0.9, "source": "detected", "valid": True,
                          "x1": float(lo[0]), "y1": float(lo[1]), "x2": float(hi[0]), "y2": float(hi[1])})
        clips.append({"video_id": video_id, "status": "ok", "path": str(clip.relative_to(root)),
                      "n_frames": N_FRAMES, "fps": 25.0, "width": SIZE[0], "height": SIZE[1]})
        status.append({"stage": "label", "video_id": video_id, "status": "ok", "n_frames": N_FRAMES})
    manifests = root / "manifests"
    write_rows(landmarks, "landmarks", manifests / "landmarks.parquet")
    write_rows(faces, "faces", manifests / "faces.parquet")
    write_rows(clips, "clips", manifests / "clips.parquet")
    write_rows(status, "video_status", manifests / "label_status.parquet")
    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    params["score"]["n_hard"] = 1
    params["annotate"].update(export_dir="wflw_v", corrections="corrections")
    params["review"] = dict(REVIEW)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", "params.yaml", "--landmarks", "manifests/landmarks.parquet",
              "--faces", "manifests/faces.parquet"]
    assert score_stage.main(common + ["--label-status", "manifests/label_status.parquet",
                                      "--out", "manifests/scores.parquet"]) == 0
    subsets = {r["video_id"]: r["subset"] for r in read_table(manifests / "scores.parquet", "scores").to_pylist()}
    assert subsets == {VIDEO_ID: "hard", CALM: "easy"}, subsets
    assert annotate() == 0
    return {"root": root, "truth": truth}


def annotate() -> int:
    """The annotate stage on the project in the working directory (corrections from params: ``corrections/``)."""
    from stages import annotate as annotate_stage

    return annotate_stage.main(["--params", "params.yaml", "--landmarks", "manifests/landmarks.parquet",
                                "--faces", "manifests/faces.parquet", "--scores", "manifests/scores.parquet",
                                "--clips", "manifests/clips.parquet", "--out", "manifests/annotations.parquet"])
