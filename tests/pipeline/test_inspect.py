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

from pipeline.cli import skipped_row
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
    assert "label distance to the demo's model reference: no demo or no annotations" in lines
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
    assert "  label     model_error: no model" in out and "  score     skipped after label model_error (above)" in out
    assert "not ranked: only videos scored ok are ranked (label model_error, above)" in out


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


def test_why_unknown_id_is_one_line_with_the_closest_ids(run, capsys):
    m = run / "manifests"
    code, out, err = cli(capsys, "why", "nope", "--manifests", str(m))
    assert code == 2 and out == "" and err == f"error: {m}: no video 'nope' in any stage manifest (7 videos known)\n"
    code, _, err = cli(capsys, "why", "vid_0", "--manifests", str(m))  # a mistyped id: the near ones are named
    assert code == 2 and err.count("\n") == 1 and "no video 'vid_0' in any stage manifest (did you mean 'vid0', " in err
    (run / "empty").mkdir()
    code, _, err = cli(capsys, "why", "vid0", "--manifests", str(run / "empty"))
    assert code == 2 and err.count("\n") == 1 and "no stage manifest" in err
    code, _, err = cli(capsys, "why", "vid0", "--manifests", str(run / "nowhere"))
    assert code == 2 and err == f"error: --manifests {run / 'nowhere'}: no such folder\n"
    code, _, err = cli(capsys, "why", "vid0", "--manifests", str(m), "--width", "-1")
    assert code == 2 and err.count("\n") == 1 and "--width -1" in err


def test_why_says_each_stage_state_once_folded_to_the_width(tmp_path, capsys):
    """A window past the end fails trim; faces, label and score nest that error once more each: ``why`` says it once."""
    m = tmp_path / "manifests"
    error = "window 24..200 is past the end of the source (130 decoded frames); nothing trimmed"
    trim = {"video_id": "cut", "status": "bad_window", "error": error}
    faces = skipped_row("cut", "trim", trim["status"], trim["error"], stage="faces")
    label = skipped_row("cut", "faces", faces["status"], faces["error"], stage="label")
    score = skipped_row("cut", "label", label["status"], label["error"])
    write_rows([{"video_id": "cut", "url": "file:cut", "status": "ok"}], "downloads", m / "downloads.parquet")
    write_rows([trim], "clips", m / "clips.parquet")
    write_rows([faces], "video_status", m / "faces_status.parquet")
    write_rows([label], "video_status", m / "label_status.parquet")
    write_rows([score], "scores", m / "scores.parquet")
    code, out, _ = cli(capsys, "why", "cut", "--manifests", str(m), "--width", "0")
    assert code == 0 and out.count(error) == 1
    assert out.splitlines() == [
        "cut", "  download  ok", f"  trim      bad_window: {error}",
        "  faces     skipped after trim bad_window (above)", "  label     skipped after trim bad_window (above)",
        "  score     skipped after trim bad_window (above)",
        "  not ranked: only videos scored ok are ranked (trim bad_window, above)"]
    code, folded, _ = cli(capsys, "why", "cut", "--manifests", str(m), "--width", "60")
    assert code == 0 and max(map(len, folded.splitlines())) <= 60 and folded.count("\n") > out.count("\n")
    assert " ".join(folded.split()) == " ".join(out.split())  # folding only moves line breaks


def test_render_frame_range_and_bad_arguments_are_one_line(run, capsys):
    m = run / "manifests"
    out_file = run / "out" / "part.gif"
    code, out, _ = cli(capsys, "render", "vid0", "--manifests", str(m), "--out", str(out_file), "--max-side", "64",
                       "--frames", "1-2,4")
    assert code == 0 and out.strip() == str(out_file)
    with Image.open(out_file) as im:
        assert im.n_frames == 3
    for args, says in ((["--max-side", "0"], "--max-side 0: must be a positive"),
                       (["--max-side", "-5"], "--max-side -5: must be a positive"),
                       (["--frames", f"3-{N}"], f"frame {N} is past the clip's last frame {N - 1}"),
                       (["--frames", "3-1"], "range 3-1 runs backwards"),
                       (["--frames", "x"], "'x' is not a frame"),
                       (["--max-side", "big"], "argument --max-side: invalid int value: 'big'")):
        code, _, err = cli_exit(capsys, "render", "vid0", "--manifests", str(m), "--out", str(out_file), *args)
        assert code == 2 and err.count("\n") == 1 and says in err, (args, err)


def cli_exit(capsys, *args: str) -> tuple[int, str, str]:
    """Like :func:`cli`, for usage mistakes that argparse ends with ``SystemExit``."""
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
