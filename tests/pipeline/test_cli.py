"""What every stage shares: its help, its checks of output locations, its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import check_outputs
from pipeline.manifest import OutputError, write_rows

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          check=False)


def test_stage_help_names_the_real_program_and_every_default():
    done = stage(["stages.label", "--help"], ROOT)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m stages.label")
    for default in ("manifests/faces.parquet", "manifests/landmarks.parquet", "params.yaml", "INFO"):
        assert f"(default: {default})" in done.stdout, default


def test_output_locations_are_checked_and_named(tmp_path):
    blocker = tmp_path / "manifests"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputError, match=r"manifests: cannot create the output folder: a file is in the way"):
        check_outputs([blocker / "faces.parquet"])
    check_outputs([tmp_path / "new" / "faces.parquet"], [tmp_path / "media"])
    assert (tmp_path / "new").is_dir() and (tmp_path / "media").is_dir()


def test_a_stage_whose_output_folder_cannot_be_created_stops_in_one_line_before_work(tmp_path):
    write_rows([{"video_id": "v", "status": "decode_error", "error": "bad", "path": None}], "clips",
               tmp_path / "clips.parquet")
    (tmp_path / "out").write_text("in the way")
    done = stage(["stages.faces", "--params", str(ROOT / "params.yaml"), "--clips", "clips.parquet",
                  "--out", "out/faces.parquet"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: out: cannot create the output folder: a file is in the way"
    assert "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.rglob("*.parquet")] == ["clips.parquet"]  # nothing written


def test_every_declared_output_exists_when_no_video_reaches_the_stage(tmp_path):
    """Every video failed upstream: the faces stage still writes both manifests (empty frames, skipped statuses)."""
    import pyarrow.parquet as pq

    write_rows([{"video_id": "v", "status": "decode_error", "error": "bad", "path": None}], "clips",
               tmp_path / "clips.parquet")
    done = stage(["stages.faces", "--params", str(ROOT / "params.yaml"), "--clips", "clips.parquet"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pq.read_table(tmp_path / "manifests" / "faces.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "manifests" / "faces_status.parquet").column("status").to_pylist() == ["skipped"]
