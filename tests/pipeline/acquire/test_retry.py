"""``download.retry`` and ``python -m stages.download --retry-failed / --retry ID``: real stage runs against the
misbehaving loopback server (conftest.py). Each run starts without the previous manifest, as under ``dvc repro``
(DVC removes a stage's outputs before it runs), so what a run keeps comes from the outcome records alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import ROOT
from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS

#: One attempt per run, so that a transient failure survives its run and the next run decides about it.
FAST = dict(retries=0, backoff=0.1, backoff_max=1.0, max_seconds=60.0, timeout=5.0)
CASES = {"good": "media/clip.mp4", "flaky": "flaky/503/1/clip.mp4", "gone": "status/404/clip.mp4"}


def project(tmp_path: Path, server, retry: str) -> tuple[Path, dict]:
    work = tmp_path / "project"
    (work / "manifests").mkdir(parents=True)
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(n_workers=1, threads_per_worker=2)
    raw["download"].update({**FAST, "retry": retry})
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    rows = [{"video_id": vid, "url": server.url(route), "start_frame": 0, "end_frame": 9, "official_subset": None,
             "source_file": "list.csv", "source_line": k + 2} for k, (vid, route) in enumerate(CASES.items())]
    write_rows(rows, "sources", work / "manifests" / "sources.parquet")
    return work, {**os.environ, "PYTHONPATH": str(ROOT)}


def download(work: Path, env: dict, *extra: str) -> tuple[dict[str, pd.Series], str]:
    manifest = work / "manifests" / "downloads.parquet"
    manifest.unlink(missing_ok=True)  # as DVC does before it runs the stage
    run = subprocess.run([sys.executable, "-m", "stages.download", "--params", "params.yaml", *extra], cwd=work,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = pd.read_parquet(manifest).set_index("video_id")
    return {v: rows.loc[v] for v in rows.index}, run.stderr


def requests(server, vid: str) -> int:
    return server.counts[f"/{CASES[vid]}"]


def test_failed_retries_only_transient_failures_and_keeps_the_rest(server, tmp_path):
    work, env = project(tmp_path, server, retry="failed")
    first, _ = download(work, env)
    assert {v: r.status for v, r in first.items()} == {"good": "ok", "flaky": "server_error", "gone": "unavailable"}
    record = json.loads((work / ".cache" / "runs" / "download_outcomes" / "gone.json").read_text())
    assert record["row"]["status"] == "unavailable" and record["key"]["url"] == server.url(CASES["gone"])
    asked = {v: requests(server, v) for v in CASES}

    second, log = download(work, env)
    assert {v: r.status for v, r in second.items()} == {"good": "ok", "flaky": "ok", "gone": "unavailable"}
    assert requests(server, "flaky") > asked["flaky"]  # attempted again: the 503 was transient
    assert requests(server, "gone") == asked["gone"] and requests(server, "good") == asked["good"]  # not asked
    assert second["gone"].error == first["gone"].error and second["gone"].attempts == first["gone"].attempts
    assert ("retry (download.retry: failed): 1 failed source(s) attempted again, 1 now ok, 0 failed again; 1 kept "
            "as they were (1 unavailable; attempt one with --retry ID)") in log
    assert "retry: flaky: server_error -> ok" in log
    assert not (work / ".cache" / "runs" / "download_outcomes" / "flaky.json").exists()  # succeeded: forgotten

    third, log = download(work, env, "--retry", "gone")  # asked by name: attempted whatever its class
    assert requests(server, "gone") > asked["gone"] and third["gone"].status == "unavailable"
    assert "retry: gone: unavailable -> unavailable" in log


def test_none_keeps_every_failure_and_all_attempts_every_failure(server, tmp_path):
    work, env = project(tmp_path, server, retry="none")
    first, _ = download(work, env)
    assert first["flaky"].status == "server_error"
    asked = {v: requests(server, v) for v in CASES}
    second, _ = download(work, env)  # none: even the transient failure is kept
    assert second["flaky"].status == "server_error" and requests(server, "flaky") == asked["flaky"]
    third, log = download(work, env, "--retry-failed")  # this run only: the transient one, not the 404
    assert third["flaky"].status == "ok" and requests(server, "gone") == asked["gone"]
    params = work / "params.yaml"
    params.write_text(params.read_text().replace("retry: none", "retry: all"))
    fourth, log = download(work, env)
    assert requests(server, "gone") > asked["gone"] and fourth["gone"].status == "unavailable"
    assert "retry (download.retry: all): 1 failed source(s) attempted again, 0 now ok, 1 failed again" in log


def test_a_retry_of_an_unknown_id_is_one_error_line(server, tmp_path):
    work, env = project(tmp_path, server, retry="failed")
    run = subprocess.run([sys.executable, "-m", "stages.download", "--params", "params.yaml", "--retry", "nope"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr == "error: --retry: nope not in the source list\n"
