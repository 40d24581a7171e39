"""The real chain, end to end: `dvc repro` on the tiny demo profile in a fresh copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.models_store import cache_dir
from pipeline.schemas import SCHEMAS

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["demo", "sources", "download", "trim", "faces", "label", "score", "annotate", "train", "evaluate", "report"]
DATASET_STAGES = STAGES[: STAGES.index("annotate") + 1]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    work = tmp_path_factory.mktemp("chain") / "project"
    work.mkdir()
    for item in ("pipeline", "stages", "ldeq", "profiles", "manifests/sources", "dvc.yaml", "params.yaml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["WFLWV_MODEL_CACHE"] = str(cache_dir())
    env["PYTHONPATH"] = str(work)
    run(["git", "init", "-q"], work, env)
    run(["dvc", "init", "-q"], work, env)
    run(["dvc", "config", "core.analytics", "false"], work, env)
    run([sys.executable, "-m", "pipeline.params", "apply", "profiles/tiny.yaml"], work, env)
    log = run(["dvc", "repro"], work, env)
    return work, env, log


def manifest(work: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(work / "manifests" / f"{name}.parquet")


@pytest.mark.chain
def test_every_stage_ran_and_manifests_open(project):
    work, _, log = project
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    for name, schema_name in [("sources", "sources"), ("downloads", "downloads"), ("clips", "clips"),
                              ("faces", "faces"), ("landmarks", "landmarks"), ("scores", "scores"),
                              ("annotations", "annotations"), ("faces_status", "video_status")]:
        df = manifest(work, name)
        assert list(df.columns) == SCHEMAS[schema_name].names, name
        assert len(df) > 0, name
        rows = duckdb.sql(f"select count(*) from '{work / 'manifests' / (name + '.parquet')}'").fetchall()[0][0]
        assert rows == len(df)


@pytest.mark.chain
def test_bad_videos_become_status_rows_and_the_run_goes_on(project):
    work, _, _ = project
    downloads = manifest(work, "downloads").set_index("video_id")
    assert downloads.loc["demo_missing_file", "status"] == "unavailable"
    assert "no_such_video.mp4" in downloads.loc["demo_missing_file", "error"]
    clips = manifest(work, "clips").set_index("video_id")
    assert clips.loc["demo_window_past_end", "status"] == "bad_window"
    assert clips.loc["demo_missing_file", "status"] == "skipped"
    assert (clips.drop(["demo_window_past_end", "demo_missing_file"])["status"] == "ok").all()
    scores = manifest(work, "scores")
    ok = scores[scores.status == "ok"]
    assert len(ok) >= 2 and {"easy", "hard"} <= set(ok.subset.dropna())
    assert (ok.subset == "hard").sum() == (ok.subset == "easy").sum() == min(2, len(ok) // 2)  # tiny: n_hard 2
    assert scores.loc[scores.status != "ok", "subset"].isna().all()  # skipped, unlabelable: never in a subset


@pytest.mark.chain
def test_clips_are_the_exact_windows(project):
    work, _, _ = project
    clips = manifest(work, "clips")
    ok = clips[clips.status == "ok"]
    assert (ok.n_frames == ok.end_frame - ok.start_frame + 1).all()
    assert (ok.start_frame == 5).all() and (ok.n_frames == 16).all()
    assert all(not Path(p).is_absolute() and (work / p).is_file() for p in ok.path)  # movable with the project


@pytest.mark.chain
def test_annotations_and_official_export(project):
    work, _, _ = project
    ann = manifest(work, "annotations")
    assert ann.landmarks.map(len).eq(98).all()
    first = ann.iloc[0]
    export = work / "data" / "wflw_v"
    boxes = np.load(export / "bboxes" / f"{first.video_id}.npy")
    marks = np.load(export / "landmarks" / f"{first.video_id}.npy")
    assert boxes.shape == (16, 4) and marks.shape == (16, 98, 2)
    assert np.allclose(marks[first.frame], np.stack(first.landmarks))
    assert (export / "videos" / f"{first.video_id}.mp4").is_file()


@pytest.mark.chain
def test_pseudo_labels_follow_the_known_warp(project):
    """On still-based demo clips the consensus labels sit near the ground truth carried through the warp."""
    work, _, _ = project
    truth = pd.read_parquet(work / "data" / "demo" / "truth.parquet")
    ann = manifest(work, "annotations").merge(truth[truth.has_truth], on=["video_id", "frame"], suffixes=("", "_gt"))
    assert len(ann) > 0
    pred = np.stack([np.stack(p) for p in ann.landmarks])
    gt = np.stack([np.stack(p) for p in ann.landmarks_gt])
    iod = np.linalg.norm(gt[:, 60] - gt[:, 72], axis=-1)
    per_frame = np.linalg.norm(pred - gt, axis=-1).mean(-1) / iod
    assert np.median(per_frame) < 0.15


@pytest.mark.chain
def test_metrics_and_plots(project):
    work, _, _ = project
    metrics = json.loads((work / "metrics" / "evaluate.json").read_text())
    for subset in ("easy", "hard"):
        methods = metrics["subsets"][subset]
        extra = {"ema_hard_tuned", "one_euro_hard_tuned"} if subset == "hard" else set()
        assert set(methods) == {"none", "ema", "one_euro", "rwr", "rwr_prox"} | extra
        assert methods["none"]["nmf_vs_none"] == 1.0
        assert methods["rwr"]["nmf_vs_none"] == methods["rwr"]["nmf"] / methods["none"]["nmf"]
    assert metrics["rwr_settings"] == {"iters": 1, "align": True, "frame0_full_solve": True}
    assert metrics["rwr_cost"]["calls_per_frame"]["rwr"] < metrics["rwr_cost"]["calls_per_frame"]["scratch"]
    assert (work / "plots" / "ced.csv").read_text().startswith("nme,scratch,rwr")
    assert json.loads((work / "metrics" / "train.json").read_text())["epochs"] == 1
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert {r["subset"] for r in summary["subsets"]} == {"easy", "hard"}
    assert "<h1>WFLW-V pipeline report</h1>" in (work / "report" / "index.html").read_text()


@pytest.mark.chain
def test_second_repro_changes_nothing(project):
    work, env, _ = project
    started = time.monotonic()
    log = run(["dvc", "repro"], work, env)
    assert "Running stage" not in log
    assert time.monotonic() - started < 60
    assert "up to date" in run(["dvc", "status"], work, env)


def lock_outs(work: Path, stages: list[str]) -> dict[str, dict[str, str]]:
    """``{stage: {out path: md5}}`` from a project's dvc.lock."""
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    return {s: {o["path"]: o["md5"] for o in lock[s]["outs"]} for s in stages}


@pytest.mark.chain
def test_dataset_is_identical_with_one_worker_and_code_edits_invalidate(project, tmp_path):
    """The same dataset from 1 worker as from 2 (byte for byte); editing consensus code invalidates its users."""
    work, env, _ = project
    twin = tmp_path / "twin"
    shutil.copytree(work, twin, symlinks=True)
    raw = yaml.safe_load((twin / "params.yaml").read_text())
    raw["cluster"]["n_workers"] = 1
    (twin / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    twin_env = {**env, "PYTHONPATH": str(twin)}
    log = run(["dvc", "repro", "--force", "annotate"], twin, twin_env)
    assert all(f"Running stage '{s}'" in log for s in DATASET_STAGES)
    assert lock_outs(twin, DATASET_STAGES) == lock_outs(work, DATASET_STAGES)
    with (twin / "pipeline" / "landmarks" / "consensus.py").open("a") as fh:
        fh.write("# an edit\n")
    status = run(["dvc", "status"], twin, twin_env)
    changed = {line.rstrip(":").strip() for line in status.splitlines() if line.endswith(":") and
               not line.startswith("\t") and not line.startswith(" ")}
    # every stage that runs consensus code is stale (train/evaluate follow once annotate's output changes)
    assert {"score", "annotate", "report"} <= changed
    assert not changed & {"demo", "sources", "download", "trim", "faces", "label"}


@pytest.mark.chain
def test_params_change_reruns_only_downstream(project):
    work, env, _ = project
    params = (work / "params.yaml").read_text().replace("n_hard: 2", "n_hard: 1")
    (work / "params.yaml").write_text(params)
    status = run(["dvc", "status"], work, env)
    assert "score:" in status and "faces:" not in status and "download:" not in status


@pytest.mark.chain
def test_dag_and_stage_help(project):
    work, env, _ = project
    dag = run(["dvc", "dag", "--md"], work, env)
    assert "demo" in dag and "evaluate" in dag
    for stage in STAGES:
        assert "usage:" in run([sys.executable, "-m", f"stages.{stage}", "--help"], work, env)
