"""pipeline.demo.build through its stage: an output folder the demo cannot use ends in one line, before any work."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_an_output_folder_outside_the_project_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stages.demo", "--out", str(tmp_path / "demo")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'demo'}: the demo must be built inside the project folder {ROOT} (its source list "
        "holds project-relative file: URLs)"]
    assert not (tmp_path / "demo").exists()
