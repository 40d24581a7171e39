"""``python -m pipeline.export fiftyone``: a real FiftyOne video dataset (its own database in a temporary folder) from
an export written here, read back through FiftyOne; and the one-line error where fiftyone is not installed.

FiftyOne lives outside the project's environment (it pins its own OpenCV build and runs MongoDB): the test uses
``$WFLWV_FIFTYONE_PYTHON`` or ``.cache/fiftyone-venv/bin/python`` (README: "Browse the export in FiftyOne") and is
skipped, with that reason, where neither can import fiftyone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, ramp_video
from ldeq.wflw import POINT_NAMES
from pipeline.export import export_wflw_v, write_split
from pipeline.fiftyone_export import wflw_skeleton_edges
from pipeline.manifest import write_rows

W, H, N = 80, 64, 6


def fiftyone_python() -> str | None:
    candidate = os.environ.get("WFLWV_FIFTYONE_PYTHON") or str(ROOT / ".cache" / "fiftyone-venv" / "bin" / "python")
    if not Path(candidate).is_file():
        return None
    probe = subprocess.run([candidate, "-c", "import fiftyone"], capture_output=True, text=True,
                           env={**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"})
    return candidate if probe.returncode == 0 else None


def write_export(root: Path) -> Path:
    export = root / "wflw_v"
    scores = []
    for rank, (vid, subset) in enumerate((("hard1", "hard"), ("easy1", "easy")), start=1):
        clip = ramp_video(root / f"{vid}.mp4", N, size=(W, H))
        points = np.stack([np.full((98, 2), [20.0 + k, 30.0]) for k in range(N)]).astype(np.float32)
        points[:, 60], points[:, 72] = [10, 30], [50, 30]
        boxes = np.tile(np.float32([8, 10, 56, 60]), (N, 1))
        boxes[3] = np.nan  # a frame whose box is unknown: no detection there
        valid = np.array([k != 3 for k in range(N)])
        export_wflw_v(export, vid, boxes, points, clip, valid, np.where(valid, 0.25 * rank, np.nan))
        scores.append({"video_id": vid, "status": "ok", "uncertainty": 1.0 / rank, "n_frames": N, "rank": rank,
                       "subset": subset, "valid_share": float(valid.mean())})
    write_rows(scores, "scores", root / "scores.parquet")
    write_split(export, root / "scores.parquet")
    return export


READ_BACK = """
import json, sys
sys.path.append(sys.argv[1])  # the project's environment, after FiftyOne's own packages
from pipeline.export import main
rc = main(["fiftyone", "wflwv-test", "--export-dir", sys.argv[2]])
import fiftyone as fo
ds = fo.load_dataset("wflwv-test")
out = {"rc": rc, "media_type": ds.media_type, "count": len(ds), "tags": ds.count_sample_tags(),
       "skeleton": [ds.default_skeleton.labels, ds.default_skeleton.edges], "videos": {}}
for s in ds:
    frames = [s.frames[k] for k in sorted(s.frames.keys())]
    out["videos"][s.video_id] = {
        "subset": s.subset, "rank": s.rank, "uncertainty": s.uncertainty, "tags": s.tags,
        "frame_numbers": sorted(s.frames.keys()), "valid": [f["valid"] for f in frames],
        "frame_uncertainty": [f["uncertainty"] for f in frames],
        "points": [f["landmarks"].keypoints[0].points for f in frames],
        "box": [None if f["box"] is None else f["box"].bounding_box for f in frames]}
print("RESULT " + json.dumps(out))
"""


def test_a_fiftyone_video_dataset_with_named_keypoints_and_the_wflw_skeleton(tmp_path):
    python = fiftyone_python()
    if python is None:
        pytest.skip("fiftyone is not importable from $WFLWV_FIFTYONE_PYTHON or .cache/fiftyone-venv (README: "
                    "'Browse the export in FiftyOne' sets it up)")
    export = write_export(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone-db"),
           "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_VALIDATION": "false"}
    run = subprocess.run([python, "-c", READ_BACK, sysconfig.get_paths()["purelib"], str(export)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["rc"] == 0 and out["media_type"] == "video" and out["count"] == 2
    assert out["tags"] == {"hard": 1, "easy": 1}
    labels, edges = out["skeleton"]
    assert labels == list(POINT_NAMES) and edges == wflw_skeleton_edges()
    hard = out["videos"]["hard1"]
    assert (hard["subset"], hard["rank"], hard["uncertainty"], hard["tags"]) == ("hard", 1, 1.0, ["hard"])
    assert hard["frame_numbers"] == list(range(1, N + 1))  # FiftyOne counts from 1: clip frame k is k + 1
    assert hard["valid"] == [True, True, True, False, True, True]
    assert hard["frame_uncertainty"][0] == 0.25 and np.isnan(hard["frame_uncertainty"][3])
    first = np.array(hard["points"][0])
    assert first.shape == (98, 2)
    np.testing.assert_allclose(first[0], [20.0 / W, 30.0 / H])  # relative coordinates
    np.testing.assert_allclose(first[72], [50.0 / W, 30.0 / H])
    np.testing.assert_allclose(hard["box"][0], [8 / W, 10 / H, 48 / W, 50 / H])
    assert hard["box"][3] is None


def test_without_fiftyone_the_command_is_one_error_line(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import fiftyone"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("fiftyone is installed in this environment")
    export = write_export(tmp_path)
    run = subprocess.run([sys.executable, "-m", "pipeline.export", "fiftyone", "x", "--export-dir", str(export)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error: fiftyone is not installed") and "pip install '.[fiftyone]'" in run.stderr
    assert run.stderr.count("\n") == 1
