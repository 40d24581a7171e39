"""pipeline.acquire.ytdlp_run as a process: an attempt never runs on for a worker that is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def job(url: str, staging: Path) -> dict[str, object]:
    staging.mkdir(parents=True, exist_ok=True)
    return {"url": url, "source_url": url, "video_id": "v", "staging": str(staging), "format": "b",
            "retries": 0, "timeout": 60.0, "allow_file_urls": False, "sleep_interval": 0.0, "max_sleep_interval": 0.0,
            "ratelimit": None, "cookiefile": None, "max_bytes": 10**9, "licenses": None,
            "result": str(staging / "result.json")}


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_an_attempt_whose_worker_is_already_gone_does_nothing(server, tmp_path):
    """The worker died before the attempt could ask for a death signal: the attempt sees another parent and exits
    without touching its job."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    task = job(server.url("media/clip.mp4"), tmp_path / "staging")
    run = subprocess.run([sys.executable, "-m", "pipeline.acquire.ytdlp_run", str(gone.pid)], env=ENV,
                         input=json.dumps(task).encode(), capture_output=True, cwd=tmp_path / "staging")
    assert run.returncode == 1, run.stderr.decode()[-2000:]
    assert server.requests == [] and list((tmp_path / "staging").iterdir()) == []


def test_an_attempt_dies_with_its_worker_alone(server, tmp_path):
    """Only the worker is killed (another session than the attempt's, so no group kill helps): the attempt follows."""
    task = job(server.url("stall/clip.mp4"), tmp_path / "staging")  # would wait 60 s for an answer
    worker = ("import subprocess, sys; "
              "attempt = subprocess.Popen([sys.executable, '-m', 'pipeline.acquire.ytdlp_run', str(__import__('os')"
              ".getpid())], stdin=subprocess.PIPE, start_new_session=True); "
              f"attempt.stdin.write({json.dumps(task).encode()!r}); attempt.stdin.close(); "
              "print(attempt.pid, flush=True); attempt.wait()")
    proc = subprocess.Popen([sys.executable, "-c", worker], env=ENV, stdout=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None
    attempt = int(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while not server.times("stall/clip.mp4"):  # the attempt read its job and is waiting on the server
        assert time.monotonic() < deadline and not _dead(attempt), "the attempt never reached the server"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while not _dead(attempt):  # the kernel sends SIGKILL as the worker exits
        assert time.monotonic() < deadline, f"attempt {attempt} outlived its worker"
        time.sleep(0.01)
    assert not (tmp_path / "staging" / "result.json").exists()
