"""yt-dlp's real code path against a loopback HTTP server and local files."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from conftest import ramp_video
from pipeline.acquire.download import classify_error, download_video, resolve_url
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.sources import SourceRow


def dl_params(**overrides):
    """The project's download params, with ``overrides`` validated like a params file."""
    return stage_params("download", PROJECT_PARAMS, **overrides)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    ramp_video(root / "clip.mp4", 20)
    (root / "page.html").write_text('<html><body><video src="clip.mp4"></video></body></html>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()


def source(video_id: str, url: str) -> SourceRow:
    return SourceRow(video_id, url, 0, 9, None, "test.csv", 2)


def test_direct_mp4_over_http(server, tmp_path):
    base, _ = server
    row = download_video(source("v1", f"{base}/clip.mp4"), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["extractor"].lower() == "generic"
    assert Path(row["path"]).is_file() and row["bytes"] == Path(row["path"]).stat().st_size
    assert (row["width"], row["height"], row["fps"]) == (64, 48, 25.0)
    assert len(row["sha256"]) == 64 and row["ytdlp_version"]


def test_page_with_video_tag(server, tmp_path):
    base, _ = server
    row = download_video(source("v2", f"{base}/page.html"), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert Path(row["path"]).suffix == ".mp4"


def test_missing_video_is_unavailable_with_real_message(server, tmp_path):
    base, _ = server
    row = download_video(source("gone", f"{base}/nope.mp4"), tmp_path / "dl", dl_params(retries=0), tmp_path)
    assert row["status"] == "unavailable"
    assert "404" in row["error"]
    assert list((tmp_path / "dl").glob("gone*")) == []


def test_connection_refused_is_network_error(tmp_path):
    row = download_video(source("x", "http://127.0.0.1:9/a.mp4"), tmp_path / "dl", dl_params(retries=0),
                         tmp_path)
    assert row["status"] == "network_error"


def test_finished_download_resumes_without_network(server, tmp_path):
    base, httpd = server
    first = download_video(source("v3", f"{base}/clip.mp4"), tmp_path / "dl", dl_params(), tmp_path)
    httpd.shutdown()
    again = download_video(source("v3", f"{base}/clip.mp4"), tmp_path / "dl", dl_params(retries=0), tmp_path)
    assert again == {**json.loads((tmp_path / "dl" / "v3.json").read_text()), "path": first["path"]}
    assert again["sha256"] == first["sha256"] and again["status"] == "ok"
    assert json.loads((tmp_path / "dl" / "v3.json").read_text())["path"] == "v3.mp4"  # movable with its folder


def test_relative_file_url_through_ytdlp(tmp_path):
    ramp_video(tmp_path / "media" / "local.mp4", 12)
    assert resolve_url("file:media/local.mp4", tmp_path) == (tmp_path / "media" / "local.mp4").resolve().as_uri()
    row = download_video(source("loc", "file:media/local.mp4"), tmp_path / "dl", dl_params(), tmp_path)
    assert row["status"] == "ok", row["error"]
    refused = download_video(source("loc2", "file:media/local.mp4"), tmp_path / "dl",
                             dl_params(allow_file_urls=False), tmp_path)
    assert refused["status"] == "download_error" and "scheme 'file' is not allowed" in refused["error"]


@pytest.mark.parametrize("message, status", [
    ("ERROR: [youtube] x: Sign in to confirm you're not a bot. Use --cookies-from-browser", "needs_auth"),
    ("ERROR: [youtube] x: Private video. Sign in if you've been granted access", "private"),
    ("ERROR: [youtube] x: This video is private", "private"),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "forbidden"),
    ("ERROR: HTTP Error 429: Too Many Requests", "rate_limited"),
    ("ERROR: [youtube] x: Video unavailable", "unavailable"),
    ("ERROR: The uploader has not made this video available in your country", "geo"),
    ("something else entirely", "download_error"),
])
def test_error_taxonomy(message, status):
    assert classify_error(message) == status
