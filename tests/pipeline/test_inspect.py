"""`python -m pipeline.inspect`: help on every subcommand, manifest summaries, the run summary, why a video is
hard, rendering one video, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.inspect import main
from pipeline.manifest import write_json, write_rows
from pipeline.uncertainty import select_subsets
from pipeline.video import VideoWriter

ROOT = Path(__file__).resolve().parents[2]
N = 5


@pytest.fixture()
def run(tmp_path, astronaut) -> Path:
    """Manifests of 6 scored videos (vid0 most uncertain through disagreement alone) and one whose label failed."""
    m = tmp_path / "manifests"
    clip = tmp_path / "clip.mp4"
    img = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    with VideoWriter(clip, fps=10) as out:
        for k in range(N):
            out.write(np.roll(img, 2 * k, axis=1))
    ids = [f"vid{i}" for i in range(6)]
    write_rows([{"video_id": v, "status": "ok", "path": str(clip), "n_frames": N, "fps": 10.0} for v in ids]
               + [{"video_id": "broken", "status": "ok", "path": str(clip), "n_frames": N, "fps": 10.0}],
               "clips", m / "clips.parquet")
    write_rows([{"video_id": v, "url": f"file:{v}", "status": "ok", "license": "cc-by" if v != "vid5" else None}
                for v in [*ids, "broken"]], "downloads", m / "downloads.parquet")
    write_rows([{"stage": "label", "video_id": v, "status": "ok"} for v in ids]
               + [{"stage": "label", "video_id": "broken", "status": "model_error", "error": "no model"}],
               "video_status", m / "label_status.parquet")
    rows = []
    for i, v in enumerate(ids):
        d = 0.9 if i == 0 else 0.1 + 0.01 * i
        valid = [k != 3 for k in range(N)]
        rows.append({"video_id": v, "status": "ok", "uncertainty": d + 0.05, "disagreement": d, "instability": 0.05,
                     "confidence": 0.9, "valid_share": 0.8, "frame_valid": valid,
                     "frame_disagreement": np.linspace(d, d + 0.1, N).astype(np.float32),
                     "frame_instability": np.full(N, 0.05, np.float32), "frame_confidence": np.full(N, 0.9)})
    rows.append({"video_id": "broken", "status": "skipped", "error": "label model_error: no model"})
    write_rows(select_subsets(rows, 2), "scores", m / "scores.parquet")
    write_rows([{"video_id": v, "frame": k, "model": mod, "family": mod, "scheme": "five", "points": [[1, 1]] * 5,
                 "wflw98": [[0, 0]] * 98, "mask": [False] * 98, "licence": "MIT" if mod == "a" else "non-commercial"}
                for v in ids[:2] for k in range(N) for mod in ("a", "b")], "landmarks", m / "landmarks.parquet")
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("sub", ["summary", "render", "why"])
def test_every_subcommand_has_help(sub):
    result = subprocess.run([sys.executable, "-m", "pipeline.inspect", sub, "--help"], cwd=ROOT,
                            capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m pipeline.inspect {sub}")


def test_manifest_summary_counts_by_status_subset_model_and_licence(run, capsys):
    m = run / "manifests"
    code, out, _ = cli(capsys, "summary", str(m / "scores.parquet"), str(m / "landmarks.parquet"),
                       str(m / "downloads.parquet"))
    assert code == 0
    scores = pd.read_parquet(m / "scores.parquet")
    status = ", ".join(f"{n} {s}" for s, n in scores.status.value_counts().items())
    subset = ", ".join(f"{n} {s}" for s, n in scores.subset.fillna("<null>").value_counts().items())
    assert f"{m / 'scores.parquet'}: scores manifest, {len(scores)} rows, {len(scores)} videos" in out
    assert f"  by status: {status}" in out and f"  by subset: {subset}" in out
    lm = pd.read_parquet(m / "landmarks.parquet")
    assert "  by model (rows): " + ", ".join(f"{n} {s}" for s, n in lm.model.value_counts().items()) in out
    assert "  by licence (rows): " + ", ".join(f"{n} {s}" for s, n in lm.licence.value_counts().items()) in out
    assert "  by license: 6 cc-by, 1 <null>" in out


def test_run_summary_is_a_few_readable_lines(run, capsys):
    none, rwr = {"nme": 6.0, "nmf": 3.0}, {"nme": 5.5, "nmf": 1.5}
    write_json(run / "metrics" / "evaluate.json", {"subsets": {"hard": {"none": none, "rwr": rwr}}})
    code, out, _ = cli(capsys, "summary", "--manifests", str(run / "manifests"), "--metrics", str(run / "metrics"),
                       "--demo-truth", str(run / "no_truth.parquet"), "--report", str(run / "report"))
    lines = out.splitlines()
    assert code == 0 and len(lines) <= 12 and max(map(len, lines)) <= 120
    assert "  download  7 ok" in lines and "  score     6 ok, 1 skipped" in lines
    assert "subsets: 2 hard, 2 easy, 2 in between (of 6 scored)" in lines
    assert ("LDEQ hard: NME 6.00 % / NMF 3.00 from scratch; NME 5.50 % / NMF 1.50 with RwR (NMF x0.50)") in lines
    assert "label quality: no demo truth or no annotations" in lines
    assert lines[-1] == f"report: not built yet ({run / 'report' / 'index.html'} missing)"


def test_why_names_the_rank_the_threshold_and_the_driver(run, capsys):
    code, out, _ = cli(capsys, "why", "vid0", "--manifests", str(run / "manifests"))
    scores = pd.read_parquet(run / "manifests" / "scores.parquet").set_index("video_id")
    hard_min = scores.uncertainty[scores.subset == "hard"].min()
    assert code == 0
    assert f"rank 1 of 6 scored -> hard (hard: rank <= 2, uncertainty >= {hard_min:.4f}" in out
    assert "-> mostly disagreement" in out  # only its disagreement stands out from the other videos
    assert "valid frames: 4 of 5 (80%); invalid: 3" in out
    assert "most uncertain frames: 4 (" in out  # its disagreement rises over the clip
    _, out, _ = cli(capsys, "why", "vid3", "--manifests", str(run / "manifests"))
    assert "scored -> in between" in out
    _, out, _ = cli(capsys, "why", "broken", "--manifests", str(run / "manifests"))
    assert "label: model_error (no model)" in out and "not ranked: skipped" in out


def test_render_one_video_and_one_line_errors(run, capsys):
    out_file = run / "out" / "vid0.gif"
    code, out, _ = cli(capsys, "render", "vid0", "--manifests", str(run / "manifests"), "--out", str(out_file),
                       "--max-side", "96")
    assert code == 0 and out.strip() == str(out_file)
    with Image.open(out_file) as im:
        assert im.n_frames == N and im.size[0] == 96
    code, _, err = cli(capsys, "render", "nope", "--manifests", str(run / "manifests"))
    assert code == 2 and err == f"error: {run / 'manifests' / 'clips.parquet'}: no video 'nope'\n"
    code, _, err = cli(capsys, "render", "vid0", "--manifests", str(run / "manifests"), "--out", "x.avi")
    assert code == 2 and err.count("\n") == 1 and "x.avi" in err
    code, _, err = cli(capsys, "summary", str(run / "missing.parquet"))
    assert code == 2 and err == f"error: {run / 'missing.parquet'}: manifest not found\n"
