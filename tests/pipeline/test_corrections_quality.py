"""benchmarks/corrections_quality.py on the review test project: without corrections it says so in one line; with
the export a real Label Studio run produced (tests/fixtures/review/labelstudio_export.json) imported, each model's
NME against the person's points is its known bias, and the consensus is judged as it was before the correction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import review_project as rp

from pipeline.review import main as review

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "corrections_quality.py"
FIXTURE = ROOT / "tests" / "fixtures" / "review" / "labelstudio_export.json"
#: each family's extra displacement on the invalid frames (review_project: nobody agrees there)
INVALID_SHIFT = dict(zip(rp.FAMILY_BIAS, [(-14.0, 6.0), (12.0, -9.0), (3.0, 15.0)]))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The review project built (score and annotate run) and exported for review, no corrections yet."""
    root = tmp_path_factory.mktemp("corrections")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        rp.build(root)
        assert review(["export"]) == 0
    return root


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300, check=False)


def test_without_corrections_it_says_so_in_one_line(project):
    done = run_script(project, "--out", "result.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no corrected frames in corrections: the run has no landmark truth to measure against\n"
    result = json.loads((project / "result.json").read_text())
    assert result["frames"] == 0 and result["videos"] == 0 and "by_group" not in result


def test_models_and_consensus_against_a_reviewers_points(project, tmp_path, monkeypatch):
    work = tmp_path / "p"
    shutil.copytree(project, work)
    monkeypatch.chdir(work)
    assert review(["import", str(FIXTURE)]) == 0
    submitted = sorted(t["data"]["frame"] for t in json.loads(FIXTURE.read_text()) if t["annotations"])
    done = run_script(work, "--out", "result.json")
    assert done.returncode == 0, done.stderr
    result = json.loads((work / "result.json").read_text())
    assert result["frames"] == len(submitted) and result["videos"] == 1
    assert result["annotators"] == {"user 1": len(submitted)} and result["not_labelled"] == []
    rows = {r["model"]: r for r in result["by_group"]}
    # no demo in this project: one group, the video
    assert all(r["level"] is None and r["video_id"] == rp.VIDEO_ID for r in result["by_group"])
    assert result["by_group"] == result["per_video"]
    assert list(rows)[:2] == ["consensus", "consensus_raw"]
    assert all(r["frames"] == len(submitted) for r in rows.values())
    person = rp.truth_points()[submitted]  # the recorded run placed these points (to < 0.03 px)
    iod = np.linalg.norm(person[:, 60] - person[:, 72], axis=-1)
    for family, bias in rp.FAMILY_BIAS.items():
        offsets = np.array([np.add(bias, INVALID_SHIFT[family]) if f in rp.INVALID else bias for f in submitted])
        expected = float(np.mean(100 * np.hypot(*offsets.T) / iod))
        assert rows[f"{family}_model"]["nme"] == pytest.approx(expected, rel=0.03)  # + N(0, 0.3 px) noise
    # the consensus before correction carries the ~3 px family bias; after it, it would be the person's points (0)
    assert rows["consensus"]["nme"] > 100 * 2.0 / iod.mean()
    ratio = result["consensus_over_best_model"]
    assert len(ratio) == 1 and ratio[0]["consensus_nme"] == pytest.approx(rows["consensus"]["nme"], abs=1e-3)
    best = min((r for r in rows.values() if r["family"] != "consensus"), key=lambda r: r["nme"])
    assert ratio[0]["best_model"] == best["model"]
    assert "| consensus |" in done.stdout and f"{len(submitted)} corrected frames of 1 video(s)" in done.stdout


def test_a_broken_corrections_file_is_one_line(project, tmp_path):
    folder = tmp_path / "corrections"
    folder.mkdir()
    (folder / "bad.parquet").write_bytes(b"not parquet")
    done = run_script(project, "--corrections", str(folder))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and str(folder / "bad.parquet") in done.stderr
