"""yt-dlp's real code path against a misbehaving loopback HTTP server (see conftest.py) and local files."""

from __future__ import annotations

import array
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, ramp_video
from pipeline.acquire.download import _kill, backoff_seconds, download_video, resolve_url, store_slot
from pipeline.acquire.ytdlp_run import classify_message, retry_after_seconds
from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.sources import SourceRow

#: Generous caps: the machine running the tests may be busy, and one attempt starts a Python process.
FAST = dict(retries=1, backoff=0.1, backoff_max=1.0, max_seconds=60.0, timeout=5.0)


def fetch(src, store, params, root):
    """One video through the download store, file digests remembered beside it."""
    return download_video(src, store, params, root, Path(root) / ".digests")


def dl_params(**overrides):
    """The project's download params with test-sized waits, ``overrides`` validated like a params file."""
    return stage_params("download", PROJECT_PARAMS, **{**FAST, **overrides})


def source(video_id: str, url: str) -> SourceRow:
    return SourceRow(video_id, url, 0, 9, None, "test.csv", 2)


def leftovers(folder: Path) -> list[str]:
    """Everything in a download store except finished downloads, their records and the folders that hold them."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".")
                  or (p.is_file() and p.suffix not in (".mp4", ".json")) or (p.is_dir() and not any(p.iterdir())))


def slot(store: Path, src, params) -> Path:
    """The store's folder for this version of a source."""
    return store_slot(store, src, params)


def test_direct_mp4_with_provenance_then_reuse_without_network(server, tmp_path):
    row = fetch(source("v1", server.url("media/clip.mp4")), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["extractor"].lower() == "generic" and row["attempts"] == 1
    here = slot(tmp_path / "dl", source("v1", server.url("media/clip.mp4")), dl_params())
    assert Path(row["path"]) == here / "v1.mp4" and row["bytes"] == Path(row["path"]).stat().st_size
    assert (row["width"], row["height"], row["fps"]) == (64, 48, 25.0)
    assert row["webpage_url"] == server.url("media/clip.mp4") and row["title"] == "clip"
    assert "license" in row and "uploader" in row and "upload_date" in row  # None for a bare file
    assert len(row["sha256"]) == 64 and row["ytdlp_version"]
    record = json.loads((here / "v1.json").read_text())
    assert record["path"] == "v1.mp4" and record["format"] == dl_params().format  # movable with its folder
    requests = len(server.requests)
    again = fetch(source("v1", server.url("media/clip.mp4")), tmp_path / "dl", dl_params(), tmp_path)
    assert len(server.requests) == requests  # reused: no network
    assert (row["note"], again["note"]) == ("downloaded", "reused")
    same = {k: v for k, v in again.items() if k not in ("seconds", "note")}
    assert same == {k: v for k, v in row.items() if k not in ("seconds", "note")}
    assert leftovers(tmp_path / "dl") == []


def test_page_with_video_tag(server, tmp_path):
    row = fetch(source("v2", server.url("page/clip.mp4")), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert Path(row["path"]).suffix == ".mp4"


def test_changed_url_or_format_downloads_again(server, tmp_path):
    out = tmp_path / "dl"
    first = fetch(source("v", server.url("media/clip.mp4")), out, dl_params(), tmp_path)
    changed = fetch(source("v", server.url("media/other.mp4")), out, dl_params(), tmp_path)
    assert changed["status"] == "ok" and changed["sha256"] != first["sha256"]
    assert (changed["width"], changed["height"]) == (32, 24)
    requests = len(server.requests)
    reformatted = fetch(source("v", server.url("media/other.mp4")), out, dl_params(format="b/bv*"),
                                 tmp_path)
    assert reformatted["status"] == "ok" and len(server.requests) > requests
    here = slot(out, source("v", server.url("media/other.mp4")), dl_params(format="b/bv*"))
    assert json.loads((here / "v.json").read_text())["format"] == "b/bv*"
    # each (url, format) is its own version in the store: coming back to one reuses it
    assert [sorted(p.name for p in version.iterdir()) for version in (out / "v").iterdir()] == [["v.json", "v.mp4"]] * 3
    back = fetch(source("v", server.url("media/clip.mp4")), out, dl_params(), tmp_path)
    assert back["note"] == "reused" and back["sha256"] == first["sha256"]


def test_retry_after_is_honoured_and_the_first_request_is_retried(server, tmp_path):
    row = fetch(source("r", server.url("flaky/429/1/clip.mp4")), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["attempts"] == 2
    first, second = server.times("flaky/429/1/clip.mp4")[:2]
    assert second - first >= 1.0  # Retry-After: 1, though the backoff alone would wait ~0.1 s


@pytest.mark.parametrize("route, status, attempts", [
    ("flaky/500/1/clip.mp4", "ok", 2),
    ("truncate/2/clip.mp4", "ok", 2),  # request 1 is yt-dlp's probe, request 2 the truncated download
    ("status/500/clip.mp4", "server_error", 3),
    ("truncate/99/clip.mp4", "truncated", 3),
    ("status/403/clip.mp4", "forbidden", 1),
    ("status/404/cookies-private-video.mp4", "unavailable", 1),  # words in a URL classify nothing
])
def test_transient_failures_are_retried_final_ones_are_not(server, tmp_path, route, status, attempts):
    row = fetch(source("t", server.url(route)), tmp_path / "dl", dl_params(retries=2), tmp_path)
    assert (row["status"], row["attempts"]) == (status, attempts), row["error"]
    assert leftovers(tmp_path / "dl") == []
    if status != "ok":
        assert row["path"] is None and not list((tmp_path / "dl").rglob("t.json"))
        assert row["error"]


@pytest.mark.parametrize("route", ["trickle/noise.mp4", "stall/clip.mp4"])
def test_wall_time_cap_stops_trickles_and_silent_servers(server, tmp_path, route):
    started = time.monotonic()
    row = fetch(source("slow", server.url(route)), tmp_path / "dl",
                         dl_params(max_seconds=8.0, timeout=2.0), tmp_path)
    assert row["status"] == "timeout", row["error"]
    assert time.monotonic() - started < 8.0 + 10  # the cap, plus killing and cleaning up
    assert leftovers(tmp_path / "dl") == [] and not (tmp_path / "dl" / "slow.mp4").exists()


@pytest.mark.parametrize("route, max_bytes", [("media/clip.mp4", 1000), ("endless/clip.mp4", 200_000)])
def test_size_cap_declared_or_streamed(server, tmp_path, route, max_bytes):
    row = fetch(source("big", server.url(route)), tmp_path / "dl", dl_params(max_bytes=max_bytes), tmp_path)
    assert row["status"] == "too_large", row["error"]
    assert leftovers(tmp_path / "dl") == [] and not list((tmp_path / "dl").glob("big*"))


@pytest.mark.parametrize("name, status, message", [
    ("text.mp4", "decode_error", "not a readable video"),
    ("audio.mp4", "no_video_stream", "no video stream (streams: audio)"),
])
def test_downloads_that_are_not_video_are_refused_and_removed(server, tmp_path, name, status, message):
    row = fetch(source("nv", server.url(f"media/{name}")), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == status and message in row["error"]
    assert not list((tmp_path / "dl").glob("nv*")) and leftovers(tmp_path / "dl") == []


def test_connection_refused_is_network_error(tmp_path):
    row = fetch(source("x", "http://127.0.0.1:9/a.mp4"), tmp_path / "dl", dl_params(retries=0), tmp_path)
    assert row["status"] == "network_error"


def test_failure_of_one_id_never_touches_another_with_a_longer_id(server, tmp_path):
    out = tmp_path / "dl"
    kept = fetch(source("x.y", server.url("media/clip.mp4")), out, dl_params(), tmp_path)
    here = slot(out, source("x.y", server.url("media/clip.mp4")), dl_params())
    busy = here / ".staging" / "x.y" / "media.mp4.part"  # as if x.y were downloading in another worker
    busy.parent.mkdir(parents=True)
    busy.write_bytes(b"partial")
    failed = fetch(source("x", server.url("status/404/a.mp4")), out, dl_params(), tmp_path)
    assert failed["status"] == "unavailable"
    assert busy.read_bytes() == b"partial" and Path(kept["path"]).is_file() and (here / "x.y.json").is_file()


def test_file_urls_stay_inside_the_project(tmp_path):
    project = tmp_path / "project"
    ramp_video(project / "media" / "local.mp4", 12)
    (tmp_path / "secret.mp4").write_bytes((project / "media" / "local.mp4").read_bytes())
    assert resolve_url("file:media/local.mp4", project) == (project / "media" / "local.mp4").resolve().as_uri()
    ok = fetch(source("loc", "file:media/local.mp4"), project / "dl", dl_params(), project)
    assert ok["status"] == "ok", ok["error"]
    for url in ("file:../secret.mp4", f"file://{tmp_path / 'secret.mp4'}", "file:media/../../secret.mp4"):
        row = fetch(source("esc", url), project / "dl", dl_params(), project)
        assert row["status"] == "download_error" and "outside the project folder" in row["error"], url
        assert not list((project / "dl").glob("esc*"))
    refused = fetch(source("loc2", "file:media/local.mp4"), project / "dl",
                             dl_params(allow_file_urls=False), project)
    assert refused["status"] == "download_error" and "scheme 'file' is not allowed" in refused["error"]
    missing = fetch(source("gone", "file:media/nothere.mp4"), project / "dl", dl_params(), project)
    assert missing["status"] == "unavailable" and "nothere.mp4" in missing["error"]


def test_the_users_cookie_file_is_never_rewritten(server, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t2147483647\tsid\tabc\n")
    before = (cookies.read_bytes(), cookies.stat().st_mtime_ns)
    row = fetch(source("c", server.url("media/clip.mp4")), tmp_path / "dl",
                         dl_params(cookiefile="cookies.txt"), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before


def test_licence_filter(server, tmp_path):
    only_cc = dl_params(licenses=["Creative Commons Attribution license (reuse allowed)"])
    row = fetch(source("l1", server.url("media/clip.mp4")), tmp_path / "dl", only_cc, tmp_path)
    assert row["status"] == "licence_filtered" and "license None" in row["error"]
    assert not list((tmp_path / "dl").glob("l1*"))  # filtered before downloading
    done = fetch(source("l2", server.url("media/clip.mp4")), tmp_path / "dl", dl_params(), tmp_path)
    assert done["status"] == "ok"
    later = fetch(source("l2", server.url("media/clip.mp4")), tmp_path / "dl", only_cc, tmp_path)
    assert later["status"] == "licence_filtered" and Path(done["path"]).is_file()


@pytest.mark.parametrize("message, status", [
    ("ERROR: [youtube] x: Sign in to confirm you're not a bot. Use --cookies-from-browser", "needs_auth"),
    ("ERROR: [youtube] x: Private video. Sign in if you've been granted access", "private"),
    ("ERROR: [youtube] x: Video unavailable", "unavailable"),
    ("ERROR: The uploader has not made this video available in your country", "geo"),
    ("ERROR: Unable to download webpage: HTTP Error 503: Service Unavailable", "server_error"),
    ("ERROR: [generic] Unable to download https://cookies.example/private/login-required.mp4: oops", "download_error"),
    ("ERROR: [youtube] cookies_private: boom", "download_error"),
])
def test_message_fallback_ignores_urls_and_ids(message, status):
    assert classify_message(message, "https://cookies.example/private/login-required.mp4", "cookies_private") == status


def test_a_short_id_does_not_erase_the_message():
    assert classify_message("ERROR: [download] Got error: 1178 bytes read, 1179 more expected", "t") == "truncated"


def test_retry_after_and_backoff():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert retry_after_seconds("soon") is None
    p = dl_params(backoff=2.0, backoff_max=5.0)
    waits = [backoff_seconds(r, p) for r in (1, 2, 3, 4) for _ in range(20)]
    assert min(waits[:20]) >= 1.0 and max(waits[:20]) <= 3.0 and max(waits) <= 7.5
    assert backoff_seconds(1, p, retry_after=30.0) == 30.0


def _project(tmp_path: Path, server, cases: dict[str, str], **download: object) -> tuple[Path, list[str], dict]:
    project = tmp_path / "project"
    (project / "manifests").mkdir(parents=True)
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["cluster"].update(n_workers=1, threads_per_worker=2)
    raw["download"].update({**FAST, **download})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    rows = [{"video_id": vid, "url": server.url(route), "start_frame": 0, "end_frame": 9, "official_subset": None,
             "source_file": "list.csv", "source_line": k + 2} for k, (vid, route) in enumerate(cases.items())]
    write_rows(rows, "sources", project / "manifests" / "sources.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return project, [sys.executable, "-m", "stages.download", "--params", "params.yaml"], env


def _run(cmd: list[str], project: Path, env: dict) -> None:
    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


#: One run over every misbehaviour: (video id → route, expected status). The good videos must finish too.
TABLE = {
    "good_1": ("media/clip.mp4", "ok"),
    "page_video_tag": ("page/clip.mp4", "ok"),
    "odd_321x241": ("media/odd.mp4", "ok"),
    "http_404": ("status/404/clip.mp4", "unavailable"),
    "http_403": ("status/403/clip.mp4", "forbidden"),
    "http_429_retry_after_then_200": ("flaky/429/1/clip.mp4", "ok"),
    "http_500_then_200": ("flaky/500/1/clip.mp4", "ok"),
    "http_500_always": ("status/500/clip.mp4", "server_error"),
    "truncated_once": ("truncate/2/clip.mp4", "ok"),
    "truncated_always": ("truncate/99/clip.mp4", "truncated"),
    "trickle_64_bytes_per_s": ("trickle/noise.mp4", "timeout"),
    "no_response_headers": ("stall/clip.mp4", "timeout"),
    "text_served_as_video": ("media/text.mp4", "decode_error"),
    "audio_only": ("media/audio.mp4", "no_video_stream"),
    "endless_body": ("endless/clip.mp4", "too_large"),
    "cookies_in_url_404": ("status/404/cookies-private.mp4", "unavailable"),
    "good_2": ("media/other.mp4", "ok"),
}


def test_an_unsafe_id_is_a_status_row_and_never_a_path(tmp_path):
    row = fetch(source("../escape", "http://127.0.0.1:9/a.mp4"), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "download_error" and "'../escape' is not a safe file name" in row["error"]
    assert not (tmp_path / "escape.json").exists()


def test_failure_table_in_one_stage_run_then_trim(server, tmp_path):
    cases = {vid: route for vid, (route, _) in TABLE.items()}
    project, cmd, env = _project(tmp_path, server, cases, max_seconds=45.0, timeout=3.0, max_bytes=500_000)
    _run(cmd, project, env)
    downloads = pd.read_parquet(project / "manifests" / "downloads.parquet").set_index("video_id")
    assert downloads["status"].to_dict() == {vid: status for vid, (_, status) in TABLE.items()}
    assert "seconds" not in downloads.columns
    media = project / "data" / "downloads"
    ok = downloads.index[downloads.status == "ok"]
    assert sorted(p.name for p in media.iterdir()) == sorted(f"{v}.mp4" for v in ok)  # the list's videos only
    store = project / ".cache" / "runs" / "downloads"  # records and media stay in the store, outside the output
    assert {f"{v}.json" for v in ok} <= {p.name for p in store.glob("*/*/*.json")}
    _run([sys.executable, "-m", "stages.trim", "--params", "params.yaml"], project, env)
    clips = pd.read_parquet(project / "manifests" / "clips.parquet").set_index("video_id")
    assert clips["status"].to_dict() == {vid: "ok" if status == "ok" else "skipped"
                                         for vid, (_, status) in TABLE.items()}
    assert (clips.loc["odd_321x241", "width"], clips.loc["odd_321x241", "height"]) == (322, 242)


def test_kill_9_mid_stage_then_rerun_gives_the_same_manifest(server, tmp_path):
    """A real SIGKILL of the stage (and its workers) mid-download; the rerun matches an uninterrupted run."""
    cases = {"a_good": "media/clip.mp4", "b_slow": "slow/4/other.mp4", "c_404": "status/404/x.mp4",
             "d_odd": "media/odd.mp4"}
    project, cmd, env = _project(tmp_path, server, cases)
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace(
        "threads_per_worker: 2", "threads_per_worker: 1"))
    media, manifest = project / "data" / "downloads", project / "manifests" / "downloads.parquet"
    store = project / ".cache" / "runs" / "downloads"  # where downloads are staged and kept
    _run(cmd, project, env)
    clean = pd.read_parquet(manifest)
    shutil.rmtree(media)
    shutil.rmtree(store)
    manifest.unlink()

    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (any(store.glob("a_good/*/a_good.json")) and any(store.glob("b_slow/*/.staging/b_slow"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the stage ended before it could be killed"
        time.sleep(0.02)
    time.sleep(1.0)  # into the slow body
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(store.glob("b_slow/*/.staging/b_slow")) and not manifest.exists()
    assert not any(store.glob("b_slow/*/b_slow.json"))  # the partial file is not a finished download

    _run(cmd, project, env)
    assert not any(store.rglob(".staging"))
    assert sorted(p.name for p in media.iterdir()) == ["a_good.mp4", "b_slow.mp4", "d_odd.mp4"]
    pd.testing.assert_frame_equal(pd.read_parquet(manifest), clean)


def _attempts_alive(project: Path) -> list[int]:
    """Pids of yt-dlp attempts still running in ``project`` (zombies are dead: only their exit status is left)."""
    alive = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if b"pipeline.acquire.ytdlp_run" not in (entry / "cmdline").read_bytes():
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cwd = os.readlink(entry / "cwd")  # the attempt runs in its staging folder
        except OSError:
            continue
        if state not in ("Z", "X") and cwd.startswith(str(project)):
            alive.append(int(entry.name))
    return alive


def _job_waiting(pid: int) -> bool:
    """Whether the job is written to ``pid``'s stdin and not read yet (bytes waiting in the pipe)."""
    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        waiting = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, waiting)
        return waiting[0] > 0
    finally:
        os.close(fd)


#: Makes the attempts' interpreter start as slowly as on a busy machine, so that a kill can land at a known moment.
SLOW_ATTEMPT_START = """import sys, time
if "pipeline.acquire.ytdlp_run" in sys.orig_argv:
    time.sleep(1.5)
"""


def test_kill_9_just_after_an_attempt_starts_leaves_no_process_and_the_rerun_is_ok(server, tmp_path):
    """SIGKILL of the stage's process group once an attempt holds its job but has run none of its own code (nor asked
    for a parent-death signal): nothing may keep writing to the staging folder that the rerun clears and reuses."""
    project, cmd, env = _project(tmp_path, server, {"slow": "slow/2/other.mp4"})
    (tmp_path / "slow_start").mkdir()
    (tmp_path / "slow_start" / "sitecustomize.py").write_text(SLOW_ATTEMPT_START)
    env = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path / "slow_start"), env["PYTHONPATH"]])}
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(_job_waiting(pid) for pid in _attempts_alive(project)):
        assert proc.poll() is None and time.monotonic() < deadline, "the stage ended before its attempt started"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert _attempts_alive(project) == []

    _run(cmd, project, env)
    downloads = pd.read_parquet(project / "manifests" / "downloads.parquet")
    assert downloads[["video_id", "status"]].values.tolist() == [["slow", "ok"]], downloads.error.tolist()
    assert not list(project.rglob(".staging"))  # wherever the download store is


def test_an_attempt_killed_at_its_cap_takes_the_processes_it_started_with_it():
    """yt-dlp may run ffmpeg; an attempt shares the stage's process group, so its helpers are found and killed."""
    script = ("import subprocess, sys, time; "
              "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(helper.pid, flush=True); time.sleep(60)")
    attempt = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert attempt.stdout is not None
    helper = int(attempt.stdout.readline())
    _kill(attempt)
    assert attempt.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while not _dead(helper):  # SIGKILL is sent before _kill returns; the kernel finishes the exit right after
        assert time.monotonic() < deadline, f"helper {helper} is still running"
        time.sleep(0.01)


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dry run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_dry_run_on_the_wflw_v_profile(tmp_path, monkeypatch, capsys):
    from pipeline.params import main as params_main
    from stages.download import main

    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT_PARAMS, params)
    assert params_main(["apply", str(ROOT / "profiles" / "wflw_v.yaml"), "--params", str(params)]) == 0
    monkeypatch.chdir(ROOT)  # the list path in the profile is project-relative
    _offline(monkeypatch)
    capsys.readouterr()
    assert main(["--dry-run", "--params", str(params), "--media", str(tmp_path / "downloads")]) == 0
    out = capsys.readouterr().out
    assert "manifests/sources/wflw_v.csv: 1000 valid rows, 0 rejected" in out
    assert "1000 (500 easy, 500 hard); 1000 to download" in out and "1000 https" in out
    assert "137,730 in the windows (120..151 per clip)" in out
    assert "download.max_bytes" in out and "licence filter: off" in out
    assert not (tmp_path / "downloads").exists()


def test_dry_run_reports_a_bad_list_and_fails(tmp_path, monkeypatch, capsys):
    from stages.download import main

    bad = tmp_path / "list.csv"
    bad.write_text("video_id,url,start_frame,end_frame\nok,https://x/1,0,9\nbad,ftp://x/2,0,9\n")
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["sources"].update(list=str(bad), strict=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _offline(monkeypatch)
    assert main(["--dry-run", "--params", str(tmp_path / "params.yaml"), "--media", str(tmp_path / "dl")]) == 2
    out = capsys.readouterr().out
    assert f"rejected: {bad}:3: URL scheme 'ftp' is not allowed" in out and "1 valid rows, 1 rejected" in out
