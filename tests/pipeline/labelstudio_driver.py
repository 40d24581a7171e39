"""Drive a running Label Studio through its REST API (label-studio-sdk) as a reviewer would.

Run by the Python of Label Studio's own venv (it is not importable from the project's environment):

    python labelstudio_driver.py --url http://127.0.0.1:PORT --token TOKEN --review REVIEW_DIR \\
        --submit submit.json --export export.json [--screenshot shot.png --email E --password P]

Creates a project with ``REVIEW_DIR/config.xml``, connects ``REVIEW_DIR/images`` as local-files storage (no sync:
the tasks already name their images), imports ``REVIEW_DIR/tasks.json`` (consensus as predictions), submits the
annotations in ``submit.json`` (``[{"video_id", "frame", "result"}]``) as the logged-in user, exports the project
as JSON (Label Studio's own export) and optionally screenshots the first submitted task in headless Chromium.
Prints one JSON line: the project id, task ids and timings.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def wait_up(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"Label Studio at {url} did not answer /health within {seconds:.0f} s")


class Cdp:
    """The few Chrome DevTools Protocol calls a screenshot needs, over the websocket that Chromium opens."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")


def screenshot(url: str, email: str, password: str, page: str, out: Path, size: tuple[int, int]) -> None:
    """Log in through the page's own form and screenshot ``page`` once the image and its keypoints are drawn."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 f"--window-size={size[0]},{size[1]}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("chromium did not open its DevTools port")
                time.sleep(0.2)
            port = port_file.read_text().splitlines()[0]
            target = next(t for t in requests.get(f"http://127.0.0.1:{port}/json", timeout=10).json()
                          if t["type"] == "page")
            cdp = Cdp(target["webSocketDebuggerUrl"])
            cdp.call("Page.enable")
            cdp.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                     mobile=False)
            cdp.call("Page.navigate", url=f"{url}/user/login/")
            _wait_for(cdp, "document.querySelector('input[name=email]') !== null", 60)
            cdp.evaluate(f"document.querySelector('input[name=email]').value = {json.dumps(email)};"
                         f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
                         "document.querySelector('form').submit(); true")
            _wait_for(cdp, "!location.pathname.startsWith('/user/login')", 60)
            cdp.call("Page.navigate", url=f"{url}{page}")
            # the labelling view is drawn on canvases (Konva): wait for them, then for the image to decode
            _wait_for(cdp, "document.querySelectorAll('canvas').length >= 1 && "
                           "[...document.images].some(i => i.src.includes('local-files') && i.complete && "
                           "i.naturalWidth > 0)", 120)
            time.sleep(3)
            shot = cdp.call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_for(cdp: Cdp, condition: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if cdp.evaluate(f"Boolean({condition})"):
                return
        except RuntimeError:
            pass  # the page is navigating
        time.sleep(0.5)
    raise SystemExit(f"page condition not met within {seconds:.0f} s: {condition}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--review", type=Path, required=True, help="the folder `pipeline.review export` wrote")
    parser.add_argument("--submit", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--email")
    parser.add_argument("--password")
    args = parser.parse_args()
    t0 = time.monotonic()
    wait_up(args.url, 300)
    ls = LabelStudio(base_url=args.url, api_key=args.token)
    project = ls.projects.create(title="WFLW-V review", label_config=(args.review / "config.xml").read_text(),
                                 show_collab_predictions=True)
    ls.import_storage.local.create(project=project.id, path=str((args.review / "images").resolve()),
                                   title="review images", use_blob_urls=False)
    tasks = json.loads((args.review / "tasks.json").read_text())
    ls.projects.import_tasks(project.id, request=tasks)
    ids = {(t.data["video_id"], t.data["frame"]): t.id for t in ls.tasks.list(project=project.id)}
    if len(ids) != len(tasks):
        raise SystemExit(f"imported {len(tasks)} tasks, Label Studio lists {len(ids)}")
    submitted = []
    for item in json.loads(args.submit.read_text()):
        task_id = ids[(item["video_id"], item["frame"])]
        ls.annotations.create(task_id, result=item["result"], lead_time=12.5)
        submitted.append(task_id)
    raw = b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
    args.export.write_bytes(raw)
    seconds = {"api": round(time.monotonic() - t0, 1)}
    if args.screenshot:
        t1 = time.monotonic()
        screenshot(args.url, args.email, args.password, f"/projects/{project.id}/data?task={submitted[0]}",
                   args.screenshot, (1600, 1000))
        seconds["screenshot"] = round(time.monotonic() - t1, 1)
    print(json.dumps({"project": project.id, "tasks": len(ids), "submitted": submitted, "seconds": seconds}))


if __name__ == "__main__":
    main()
