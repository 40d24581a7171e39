"""The real chain, end to end: `dvc repro` on the tiny demo profile in a fresh copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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
    for item in ("pipeline", "stages", "ldeq", "profiles", "manifests/sources", "corrections", "dvc.yaml",
                 "params.yaml"):
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
    """On still-based demo clips the consensus labels move with the face: they sit near the demo's model reference
    carried through the warp (model output measured on the clean still, not truth: a check that labels follow the
    known motion, not of their accuracy)."""
    work, _, _ = project
    demo = pd.read_parquet(work / "data" / "demo" / "truth.parquet")
    ann = manifest(work, "annotations").merge(demo[demo.has_truth], on=["video_id", "frame"])
    assert len(ann) > 0
    pred = np.stack([np.stack(p) for p in ann.landmarks])
    ref = np.stack([np.stack(p) for p in ann.reference_landmarks])
    iod = np.linalg.norm(ref[:, 60] - ref[:, 72], axis=-1)
    per_frame = np.linalg.norm(pred - ref, axis=-1).mean(-1) / iod
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


def timings(work: Path, stage: str) -> pd.DataFrame:
    """The stage's per-video timings of its last run (``reused`` true/false)."""
    return pd.read_csv(work / "logs" / "timings" / f"{stage}.csv")


def set_params(work: Path, **blocks: dict) -> None:
    raw = yaml.safe_load((work / "params.yaml").read_text())
    for block, values in blocks.items():
        raw[block].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.chain
def test_one_new_video_computes_only_that_video_and_equals_a_scratch_run(project, tmp_path):
    """One more source row: trim, faces and label compute that video alone (the run cache reuses the others), and the
    dataset is byte-identical to a from-scratch run of the same list with 1 worker instead of 2 and an empty cache.
    Taking the row out again reuses everything and gives back the first run's dataset."""
    work, env, _ = project
    before = lock_outs(work, DATASET_STAGES)
    twin = tmp_path / "twin"
    shutil.copytree(work, twin, symlinks=True)
    set_params(twin, demo={"n_clips": 5}, cluster={"n_workers": 1})
    twin_env = {**env, "PYTHONPATH": str(twin), "WFLWV_CACHE": str(tmp_path / "empty_cache")}
    log = run(["dvc", "repro", "annotate"], twin, twin_env)
    assert all(f"Running stage '{s}'" in log for s in DATASET_STAGES)
    assert not timings(twin, "label").reused.any()

    listed = set(manifest(work, "sources").video_id)
    set_params(work, demo={"n_clips": 5})
    log = run(["dvc", "repro", "annotate"], work, env)
    added = sorted(set(manifest(work, "sources").video_id) - listed)
    assert len(added) == 1
    for stage in ("trim", "faces", "label"):
        assert timings(work, stage).query("not reused").video_id.tolist() == added, stage
        assert re.search(rf"{stage}: .*\(\d+ reused, 1 computed\)", log), stage
    assert lock_outs(work, DATASET_STAGES) == lock_outs(twin, DATASET_STAGES)

    set_params(work, demo={"n_clips": 4})
    log = run(["dvc", "repro", "annotate"], work, env)
    for stage in ("trim", "faces", "label"):  # DVC's own run cache may restore the stage; else ours reuses all
        assert f"Stage '{stage}' is cached" in log or timings(work, stage).reused.all(), stage
    assert lock_outs(work, DATASET_STAGES) == before


@pytest.mark.chain
def test_code_edits_invalidate_the_stages_that_run_them(project, tmp_path):
    work, env, _ = project
    twin = tmp_path / "twin"
    shutil.copytree(work, twin, symlinks=True)
    twin_env = {**env, "PYTHONPATH": str(twin)}
    with (twin / "pipeline" / "landmarks" / "consensus.py").open("a") as fh:
        fh.write("# an edit\n")
    status = run(["dvc", "status"], twin, twin_env)
    changed = {line.rstrip(":").strip() for line in status.splitlines() if line.endswith(":") and
               not line.startswith("\t") and not line.startswith(" ")}
    # every stage that runs consensus code is stale (train/evaluate follow once annotate's output changes)
    assert {"score", "annotate", "report"} <= changed
    assert not changed & {"demo", "sources", "download", "trim", "faces", "label"}


@pytest.mark.chain
def test_cache_key_ingredients(project, tmp_path):
    """Run the faces stage by hand in a copy: another stage's params reuse every video, one replaced clip recomputes
    that clip alone, an edit of a module the stage imports recomputes every video."""
    work, env, _ = project
    twin = tmp_path / "twin"
    shutil.copytree(work, twin, symlinks=True)
    twin_env = {**env, "PYTHONPATH": str(twin)}
    faces = [sys.executable, "-m", "stages.faces"]
    clips = manifest(twin, "clips").query("status == 'ok'").sort_values("video_id")

    set_params(twin, score={"n_hard": 1}, label={"models": ["dlib_68"]})
    run(faces, twin, twin_env)
    assert timings(twin, "faces").reused.all()

    first, second = (twin / p for p in clips.path.iloc[:2])
    shutil.copyfile(first, twin / "replacement.mp4")
    os.replace(twin / "replacement.mp4", second)  # a new file: the cached clip it was linked to stays intact
    run(faces, twin, twin_env)
    assert timings(twin, "faces").query("not reused").video_id.tolist() == [clips.video_id.iloc[1]]

    with (twin / "pipeline" / "faces" / "tracker.py").open("a") as fh:
        fh.write("# an edit\n")
    run(faces, twin, twin_env)
    assert not timings(twin, "faces").reused.any() and len(timings(twin, "faces")) == len(clips)


@pytest.mark.chain
def test_a_killed_label_stage_resumes_with_what_it_finished(project, tmp_path):
    """kill -9 of `dvc repro label` mid-stage after a change that invalidates every video: the rerun reuses the videos
    finished before the kill, computes the rest, and writes what an uninterrupted run writes."""
    work, env, _ = project
    twin = tmp_path / "twin"
    shutil.copytree(work, twin, symlinks=True)
    set_params(twin, label={"models": ["dlib_68", "mediapipe_mesh_v2", "retinaface_5"]}, cluster={"n_workers": 1})
    twin_env = {**env, "PYTHONPATH": str(twin)}
    entries = twin / ".cache" / "runs" / "label"
    known = set(entries.glob("??/*"))
    n_videos = (manifest(twin, "faces_status").status == "ok").sum()
    proc = subprocess.Popen(["dvc", "repro", "label"], cwd=twin, env=twin_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(set(entries.glob("??/*")) - known) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(set(entries.glob("??/*")) - known)
    assert 1 <= finished < n_videos, "the kill came too late to test a resume"
    run(["dvc", "repro", "label"], twin, twin_env)
    reused = timings(twin, "label").reused
    assert reused.sum() >= finished and (~reused).sum() >= 1 and len(reused) == n_videos

    scratch = tmp_path / "scratch"
    shutil.copytree(twin, scratch, symlinks=True)
    scratch_env = {**twin_env, "PYTHONPATH": str(scratch), "WFLWV_CACHE": str(tmp_path / "empty_cache")}
    run(["dvc", "repro", "--force", "label"], scratch, scratch_env)
    assert not timings(scratch, "label").reused.any()
    assert lock_outs(scratch, ["label"]) == lock_outs(twin, ["label"])


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


def _frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.chain
def test_a_changed_source_is_downloaded_again_and_leftovers_leave_the_output(project):
    """A new seed lists other videos: data/downloads holds exactly the new list, and the seed back reuses the stored
    downloads. demo.tail_frames changes every source video under the same ids: the downloads and clips follow the
    new media (the old code served the stale download)."""
    work, env, _ = project
    listed = sorted(manifest(work, "downloads").query("status == 'ok'").video_id)
    set_params(work, demo={"seed": 7})
    run(["dvc", "repro", "download"], work, env)
    now = manifest(work, "downloads").query("status == 'ok'")
    assert sorted(now.video_id) != listed
    assert sorted(p.name for p in (work / "data" / "downloads").iterdir()) == sorted(Path(p).name for p in now.path)
    set_params(work, demo={"seed": 0})
    run(["dvc", "repro", "--no-run-cache", "download"], work, env)  # run it: DVC would restore its earlier outputs
    assert timings(work, "download").query("video_id in @listed").reused.all()
    ok = manifest(work, "downloads").query("status == 'ok'")
    assert ok.webpage_url.str.startswith("file:data/demo/raw/").all() and ok.upload_date.isna().all()

    set_params(work, demo={"tail_frames": 6})
    run(["dvc", "repro", "trim"], work, env)
    downloads = manifest(work, "downloads").query("status == 'ok'")
    for row in downloads.itertuples():
        raw = work / row.url.removeprefix("file:")  # the project file behind the source's URL
        assert (work / row.path).read_bytes() == raw.read_bytes(), row.video_id
        assert _frames(work / row.path) == 5 + 16 + 6
    assert "source changed" in (work / "logs" / "timings" / "download.csv").read_text()
    assert (manifest(work, "clips").query("status == 'ok'").n_frames == 16).all()
    assert not timings(work, "trim").reused.any()  # new media: every clip cut again
