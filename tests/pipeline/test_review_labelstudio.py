"""The review round trip against the real tool (slow: `make test-review`; excluded from `make test`).

Label Studio goes into its own venv (it pins its own Django): ``.cache/label-studio-venv``, created here when missing
(a few minutes, once). The test starts it on 127.0.0.1, and a script run by that venv's Python
(``labelstudio_driver.py``, label-studio-sdk) creates a project with the exported labelling config, imports the
exported tasks, submits the true points on three keyframes and the invalid frame, and exports the project as JSON.
That export goes through ``pipeline.review import`` and the annotate stage: the corrected frames carry the
submitted points, the frames between corrected keyframes the interpolated correction. With chromium on PATH it also
screenshots the task page to ``test-artifacts/review/labelstudio_task.png``. ``WFLWV_RECORD_FIXTURES=1`` copies the
export to ``tests/fixtures/review/labelstudio_export.json`` (what the default suite imports).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import review_project as rp

from pipeline.review import ChosenFrame, frame_task, main

pytestmark = pytest.mark.labelstudio

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "label-studio-venv"
PACKAGES = {"label-studio": "1.23.2", "label-studio-sdk": "2.1.2", "websockets": "17.4"}
DRIVER = Path(__file__).with_name("labelstudio_driver.py")
FIXTURE = ROOT / "tests" / "fixtures" / "review" / "labelstudio_export.json"
ARTIFACTS = ROOT / "test-artifacts" / "review"
EMAIL, PASSWORD, TOKEN = "reviewer@example.com", "review-pass-1", "review0token0for0tests"
SUBMIT = (0, 8, 15, 12)  # three keyframes and the invalid frame


def _installed(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m\nout = {}\n"
            f"for p in {sorted(PACKAGES)!r}:\n    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return json.loads(done.stdout)


def label_studio_python() -> Path:
    """The venv's Python, installing Label Studio into it first where needed; skips the test when that fails."""
    python = VENV / "bin" / "python"
    if python.is_file() and _installed(python) == PACKAGES:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True,
                       text=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        *(f"{p}=={v}" for p, v in PACKAGES.items())], check=True, capture_output=True, text=True,
                       timeout=1800)
    except subprocess.CalledProcessError as err:
        last = (err.stderr or err.stdout or "").strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"Label Studio cannot be installed into {VENV}: {last[0]}")
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"Label Studio cannot be installed into {VENV}: {err}")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def label_studio(tmp_path):
    """A running Label Studio (own venv, own data dir) serving local files from the test project's root."""
    python = label_studio_python()
    root = tmp_path / "project"
    root.mkdir()
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root), "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
           "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "PYTHONPATH": ""}
    log = (tmp_path / "label-studio.log").open("w")
    server = subprocess.Popen(
        [str(python.parent / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(tmp_path / "ls-data"), "--username", EMAIL, "--password", PASSWORD,
         "--user-token", TOKEN, "--enable-legacy-api-token"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"python": python, "url": f"http://127.0.0.1:{port}", "root": root, "log": tmp_path / "label-studio.log"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its runserver child: the group this test started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def test_round_trip_through_label_studio(label_studio, monkeypatch, capsys):
    t0 = time.monotonic()
    root = label_studio["root"]
    monkeypatch.chdir(root)
    rp.build(root)
    assert main(["export"]) == 0
    tasks = json.loads((root / "review" / "tasks.json").read_text())
    exported = {t["data"]["frame"] for t in tasks}
    assert set(SUBMIT) <= exported
    truth = rp.truth_points()
    # the reviewer drags every point of these frames onto the true face (the consensus is ~3 px off)
    plan = [{"video_id": rp.VIDEO_ID, "frame": f,
             "result": frame_task(rp.VIDEO_ID, f, "", rp.SIZE, truth[f], ChosenFrame(f, "", ""),
                                  None)["predictions"][0]["result"]} for f in SUBMIT]
    (root / "submit.json").write_text(json.dumps(plan))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    export = ARTIFACTS / "labelstudio_export.json"
    shot = ARTIFACTS / "labelstudio_task.png"
    shot.unlink(missing_ok=True)
    command = [str(label_studio["python"]), str(DRIVER), "--url", label_studio["url"], "--token", TOKEN,
               "--review", "review", "--submit", "submit.json", "--export", str(export)]
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        command += ["--screenshot", str(shot), "--email", EMAIL, "--password", PASSWORD]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n--- server log:\n{label_studio['log'].read_text()[-3000:]}"
    driver = json.loads(done.stdout.strip().splitlines()[-1])
    assert driver["tasks"] == len(tasks) and len(driver["submitted"]) == len(SUBMIT)
    if "--screenshot" in command:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    if os.environ.get("WFLWV_RECORD_FIXTURES") == "1":
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export, FIXTURE)

    capsys.readouterr()
    assert main(["import", str(export)]) == 0
    assert f"{len(SUBMIT)} corrected frames of 1 video(s) by user 1" in capsys.readouterr().out
    assert rp.annotate() == 0
    ann = pd.read_parquet(root / "manifests" / "annotations.parquet")
    ann = ann[ann.video_id == rp.VIDEO_ID].set_index("frame")
    points = {f: np.stack(p) for f, p in ann.landmarks.items()}
    for f in SUBMIT:  # the moved points, as placed in Label Studio (4 decimals of a percent: < 0.03 px)
        assert ann.loc[f, "label_source"] == "human" and np.abs(points[f] - truth[f]).max() < 0.03
    propagated = sorted(ann.index[ann.label_source == "propagated"])
    assert propagated == [f for f in range(1, 15) if f not in SUBMIT]  # between the keyframes 0, 8, 15
    assert all(np.linalg.norm(points[f] - truth[f], axis=-1).mean() < 0.5 for f in propagated
               if f not in rp.INVALID)  # the invalid frame 11 took the offset too, but its consensus was broken
    print(f"Label Studio round trip: {time.monotonic() - t0:.0f} s in all; driver {driver['seconds']}")
