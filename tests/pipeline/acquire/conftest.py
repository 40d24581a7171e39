"""A loopback HTTP server that misbehaves on purpose, for yt-dlp's real code path.

Routes (``<name>`` is a file registered in ``server.files``):

* ``/media/<name>``: the file, with Content-Length (HEAD too);
* ``/status/<code>/<name>``: always that HTTP status (429 with ``Retry-After: 1``);
* ``/flaky/<code>/<n>/<name>``: that status for the first ``n`` requests of this path, then the file;
* ``/truncate/<n>/<name>``: the first ``n`` requests send half the declared body and close, then the file;
* ``/trickle/<name>``: the declared body at 64 B/s;
* ``/slow/<seconds>/<name>``: the body spread evenly over that many seconds (a slow but healthy server);
* ``/stall/<name>``: accepts and never answers;
* ``/endless/<name>``: video headers without Content-Length, then zeros until the client leaves;
* ``/page/<name>``: an HTML page with ``<video src="/media/<name>">``.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ramp_video


@dataclass
class BadServer:
    """The running server: its base URL, served files, and a log of (time, path) per request."""

    base: str
    files: dict[str, tuple[bytes, str]]
    requests: list[tuple[float, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def url(self, route: str) -> str:
        return f"{self.base}/{route}"

    def times(self, route: str) -> list[float]:
        return [t for t, p in self.requests if p == f"/{route}"]


def _handler(state: BadServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _file(self, name: str) -> tuple[bytes, str]:
            return state.files[name]

        def _send(self, code: int, body: bytes, ctype: str, length: int | None = None, head: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if code == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            if length is not None and length != len(body):
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)
                self.wfile.flush()

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            state.requests.append((time.monotonic(), self.path))
            state.counts[self.path] += 1
            seen = state.counts[self.path]
            parts = self.path.strip("/").split("/")
            kind, rest = parts[0], parts[1:]
            try:
                if kind == "media":
                    self._send(200, *self._file(rest[0]), head=head)
                elif kind == "status":
                    self._send(int(rest[0]), b"nope", "text/plain", head=head)
                elif kind == "flaky":
                    code, n, name = int(rest[0]), int(rest[1]), rest[2]
                    if seen <= n:
                        self._send(code, b"try later", "text/plain", head=head)
                    else:
                        self._send(200, *self._file(name), head=head)
                elif kind == "truncate":
                    n, (body, ctype) = int(rest[0]), self._file(rest[1])
                    if seen <= n and not head:
                        self._send(200, body[: len(body) // 2], ctype, length=len(body))
                        self.close_connection = True
                    else:
                        self._send(200, body, ctype, head=head)
                elif kind == "trickle":
                    body, ctype = self._file(rest[0])
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for i in range(0, 0 if head else len(body), 64):
                        self.wfile.write(body[i:i + 64])
                        self.wfile.flush()
                        time.sleep(1)
                elif kind == "slow":
                    seconds, (body, ctype) = float(rest[0]), self._file(rest[1])
                    self._send(200, b"", ctype, length=len(body), head=True)
                    step = max(1, len(body) // 20)
                    for i in range(0, 0 if head else len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(seconds / 20)
                elif kind == "stall":
                    time.sleep(60)
                    self.close_connection = True
                elif kind == "endless":
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    block = b"\0" * 65536
                    while not head:
                        self.wfile.write(block)
                    self.close_connection = True
                elif kind == "page":
                    html = f'<html><body><video src="/media/{rest[0]}"></video></body></html>'.encode()
                    self._send(200, html, "text/html; charset=utf-8", head=head)
                else:
                    self._send(404, b"not found", "text/plain", head=head)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up (a killed attempt, a keep-alive reset) are part of the tests


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 holding only an AAC audio stream."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=22050)
        stream.layout = "mono"
        samples, step = int(22050 * seconds), 1024
        for start in range(0, samples, step):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, step), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 22050, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def odd_sized(path: Path, n: int = 12, size: tuple[int, int] = (321, 241)) -> Path:
    """An H.264 video of odd width and height (4:4:4 chroma, which allows them)."""
    w, h = size
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        for k in range(n):
            rgb = np.full((h, w, 3), (16 * k % 256, 80, 160), np.uint8)
            rgb[-1, :] = 250  # the last row and column differ, so padding by replication is visible
            rgb[:, -1] = 5
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    """The files the server can serve: two distinct videos, an odd-sized one, audio only, text, noise."""
    root = tmp_path_factory.mktemp("www")
    return {
        "clip.mp4": (ramp_video(root / "clip.mp4", 20).read_bytes(), "video/mp4"),
        "other.mp4": (ramp_video(root / "other.mp4", 30, size=(32, 24)).read_bytes(), "video/mp4"),
        "odd.mp4": (odd_sized(root / "odd.mp4").read_bytes(), "video/mp4"),
        "audio.mp4": (audio_only(root / "audio.mp4").read_bytes(), "video/mp4"),
        "text.mp4": (b"this is not a video\n" * 50, "video/mp4"),
        "noise.mp4": (np.random.default_rng(0).bytes(100_000), "video/mp4"),  # 26 min at a 64 B/s trickle
    }


@pytest.fixture()
def server(media: dict[str, tuple[bytes, str]]) -> BadServer:
    """A fresh server (request counters at zero) on a free loopback port."""
    state = BadServer("", dict(media))
    httpd = _Server(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
