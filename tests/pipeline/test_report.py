"""The report: its pictures and links on a small run built here (with a corrections file a reviewer might have
imported), its notes where inputs are missing, and the page itself in headless Chromium (no console errors, every
image loads, a screenshot kept under test-artifacts/)."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.annotations import VideoCorrections, apply_corrections, read_corrections
from pipeline.manifest import read_table, rows_by_video, write_json, write_rows
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.report import (
    REFERENCE_NOTE,
    ReportInputs,
    build_report,
    model_reference_distance,
    run_corrections,
    run_summary,
    summary_lines,
)
from pipeline.uncertainty import select_subsets, video_labels
from pipeline.video import VideoWriter

ROOT = Path(__file__).resolve().parents[2]
N_FRAMES = 6
LEVELS = [0, 1, 2, 3, 1, 2]  # demo difficulty of each video
OFFSETS = {"dlib_68": (2.0, 0.0), "faceapi_68": (0.0, 3.0)}  # each model's constant offset from the reference, px
CONSENSUS_OFFSET = (1.0, 1.0)  # the annotations' consensus, px from the reference
HUMAN_OFFSET = (1.0, -1.0)  # a reviewer's points, px from the reference (as far from it as the consensus)
CORRECTED_FRAMES = (1, 4)  # of every hard video
SCORE = stage_params("score", PROJECT_PARAMS)
REPORT = stage_params("report", PROJECT_PARAMS, easy_renders=1, render_format="webp", render_max_side=160,
                      sheet_frames=4)


def shape98(cx: float, cy: float, r: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 98, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], axis=1).astype(np.float32)


def make_run(root: Path, astronaut: np.ndarray, complete: bool = True, corrected: bool = True) -> ReportInputs:
    """A small run of 6 videos (+1 failed download): every manifest the report reads, the demo's truth.parquet,
    metrics and plot tables. Labels sit at known offsets from the model reference, so distances are known by
    construction. With ``corrected``, a reviewer's corrections file (frames 1 and 4 of each hard video, points at
    ``HUMAN_OFFSET``) is merged into the annotations by the annotate stage's own code."""
    m, clips_dir = root / "manifests", root / "clips"
    clips_dir.mkdir(parents=True)
    img = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    truth = shape98(80, 70, 25)
    downloads = [{"video_id": "gone", "url": "file:gone.mp4", "status": "unavailable", "error": "404"}]
    clips = [{"video_id": "gone", "status": "skipped", "error": "download unavailable: 404"}]
    statuses, faces, landmarks, truth_rows, score_rows = [], [], [], [], []
    for v, level in enumerate(LEVELS):
        vid = f"vid{v}"
        path = clips_dir / f"{vid}.mp4"
        with VideoWriter(path, fps=10) as out:
            for k in range(N_FRAMES):
                out.write(np.roll(img, k * (v + 1), axis=1))
        downloads.append({"video_id": vid, "url": f"file:{vid}.mp4", "status": "ok"})
        clips.append({"video_id": vid, "status": "ok", "path": str(path), "n_frames": N_FRAMES, "fps": 10.0})
        statuses.append({"stage": "faces", "video_id": vid, "status": "ok", "n_frames": N_FRAMES})
        for k in range(N_FRAMES):
            faces.append({"video_id": vid, "frame": k, "track_id": 0, "detector": "d", "n_detections": 1,
                          "source": "detected", "valid": True, "x1": 45.0, "y1": 35.0, "x2": 115.0, "y2": 115.0})
            truth_rows.append({"video_id": vid, "frame": k, "media": "astronaut", "difficulty": level,
                               "scenario": "camera", "has_truth": True, "visible": True, "x1": 45.0, "y1": 35.0,
                               "x2": 115.0, "y2": 115.0, "reference_landmarks": truth})
            for model, family in (("dlib_68", "dlib_ert"), ("faceapi_68", "faceapi_cnn")):
                pts = truth + np.float32(OFFSETS[model])
                # dlib fails its mirror check on every 4th frame of each video
                mirror = 0.4 if model == "dlib_68" and k % 4 == 0 else 0.02
                landmarks.append({"video_id": vid, "frame": k, "model": model, "family": family, "scheme": "wflw98",
                                  "points": pts, "wflw98": pts, "mask": np.ones(98, bool),
                                  "mirror_disagreement": mirror, "jitter_disagreement": 0.01})
        d = np.full(N_FRAMES, 0.05 * (v + 1), np.float32)
        score_rows.append({"video_id": vid, "status": "ok", "uncertainty": float(2 * d[0]), "n_frames": N_FRAMES,
                           "disagreement": float(d[0]), "instability": float(d[0]), "confidence": 0.9,
                           "valid_share": 1.0, "frame_valid": [True] * N_FRAMES, "frame_disagreement": d,
                           "frame_instability": d + np.arange(N_FRAMES, dtype=np.float32) / 100,
                           "frame_confidence": np.full(N_FRAMES, 0.9, np.float32)})
    score_rows = select_subsets(score_rows, 2)
    write_rows(downloads, "downloads", m / "downloads.parquet")
    write_rows(clips, "clips", m / "clips.parquet")
    write_rows(statuses, "video_status", m / "faces_status.parquet")
    write_rows([dict(s, stage="label") for s in statuses], "video_status", m / "label_status.parquet")
    write_rows(faces, "faces", m / "faces.parquet")
    write_rows(landmarks, "landmarks", m / "landmarks.parquet")
    write_rows(score_rows, "scores", m / "scores.parquet")
    if not complete:
        return ReportInputs(m, root / "metrics", root / "plots", root / "truth.parquet")
    consensus = truth + np.float32(CONSENSUS_OFFSET)
    selected = {r["video_id"]: r["subset"] for r in score_rows if r["subset"]}
    if corrected:
        write_rows([{"video_id": v, "frame": k, "landmarks": truth + np.float32(HUMAN_OFFSET), "width": 160,
                     "height": 160, "annotator": "reviewer@example.org", "annotated_at": "2026-01-02T10:00:00Z",
                     "export_file": "project-1.json"} for v, s in sorted(selected.items()) if s == "hard"
                    for k in CORRECTED_FRAMES], "corrections", root / "corrections" / "project-1.parquet")
    fixes = read_corrections(root / "corrections")
    annotations = []
    for v, s in sorted(selected.items()):
        frames, ones = np.arange(N_FRAMES), np.ones(N_FRAMES, bool)
        points, valid, source = apply_corrections(v, frames, np.repeat(consensus[None], N_FRAMES, 0), ones, ones,
                                                  VideoCorrections(fixes.get(v, {}), 30))
        annotations += [{"video_id": v, "frame": k, "subset": s, "x1": 45.0, "y1": 35.0, "x2": 115.0, "y2": 115.0,
                         "landmarks": points[k], "landmarks_raw": consensus, "n_models": 2, "valid": bool(valid[k]),
                         "disagreement": 0.1, "label_source": source[k]} for k in range(N_FRAMES)]
    write_rows(annotations, "annotations", m / "annotations.parquet")
    write_rows(truth_rows, "demo_truth", root / "truth.parquet")
    method = {"nme": 5.0, "nmf": 2.0, "nmf_vs_none": 1.0, "nme_vs_none": 1.0}
    rwr = {"nme": 4.9, "nmf": 1.2, "nmf_vs_none": 0.6, "nme_vs_none": 0.98}
    write_json(root / "metrics" / "evaluate.json", {
        "subsets": {"hard": {"none": method, "rwr": rwr, "rwr_prox": rwr}},
        "filters": {"ema": {"alpha": 0.5}, "one_euro": {"min_cutoff": 1.0, "beta": 0.02}},
        "filters_tuned_on_hard": {"ema": {"alpha": 0.7}, "one_euro": {"min_cutoff": 2.0, "beta": 0.08}},
        "rwr_gamma": {"chosen": 0.0, "objective": {"0.0": 0.81, "0.5": 0.93}},
        "rwr_cost": {"calls_per_frame": {"scratch": 6.0, "rwr": 2.0}}})
    plots = root / "plots"
    plots.mkdir()
    xs = np.linspace(0, 0.1, 11)
    (plots / "ced.csv").write_text("nme,scratch,rwr\n" + "".join(f"{x},{x * 8},{x * 9}\n" for x in xs))
    (plots / "nmf_per_video.csv").write_text("video_id,subset,method,nme,nmf\n" + "".join(
        f"{v},{s},{meth},5.0,{2.0 if meth == 'none' else 1.5}\n" for v, s in selected.items()
        for meth in ("none", "rwr")))
    (plots / "train_loss.csv").write_text("epoch,loss\n1,0.5\n2,0.3\n3,0.25\n")
    return ReportInputs(m, root / "metrics", plots, root / "truth.parquet")


def local_refs(page: str) -> list[str]:
    return [r for r in re.findall(r'(?:src|href)="([^"]+)"', page) if not r.startswith(("http", "#"))]


@pytest.fixture(scope="module")
def stage_report(tmp_path_factory, astronaut) -> tuple[ReportInputs, Path]:
    """The report stage run as DVC runs it (its CLI, renders on a LocalCluster) on a complete small run."""
    root = tmp_path_factory.mktemp("run")
    inputs = make_run(root, astronaut)
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    raw["report"].update(easy_renders=1, render_format="webp", render_max_side=160, sheet_frames=4)
    raw["cluster"].update(n_workers=1, memory_limit="2GiB")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = root / "report"
    result = subprocess.run(
        [sys.executable, "-m", "stages.report", "--params", str(root / "params.yaml"), "--manifests",
         str(inputs.manifests), "--metrics", str(inputs.metrics), "--plots", str(inputs.plots), "--demo-truth",
         str(inputs.demo_truth), "--out", str(out)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return inputs, out


def test_report_has_every_picture_and_every_link_resolves(stage_report):
    inputs, out = stage_report
    page = (out / "index.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    refs = local_refs(page)
    assert refs and all((out / r).is_file() for r in refs), [r for r in refs if not (out / r).is_file()]
    assert set(summary["plots"]) == {"uncertainty", "label_reference_distance", "model_reference_distance", "ced",
                                     "nmf_per_video", "train_loss", "sheet_hard_worst", "sheet_easy_best"}
    for rel in summary["plots"].values():
        assert f'src="{rel}"' in page
        assert cv2.imread(str(out / rel)).std() > 5  # a drawn picture, not a blank canvas
    scores = pd.read_parquet(inputs.manifests / "scores.parquet")
    hard = set(scores.video_id[scores.subset == "hard"])
    easy = scores[scores.subset == "easy"].sort_values("rank").video_id.tolist()
    assert set(summary["renders"]) == hard | {easy[0]}  # every hard video and one easy sample
    for vid in hard:
        assert f'href="renders/{vid}.webp"' in page  # each hard video links its render
        with Image.open(out / "renders" / f"{vid}.webp") as im:
            assert im.is_animated and im.n_frames == N_FRAMES and im.size[0] == 160  # frame side, panel below
    assert summary["missing"] == []
    assert {r["subset"] for r in summary["subsets"]} == {"easy", "hard"}
    assert {r["stage"] for r in summary["status"]} == {"download", "trim", "faces", "label", "score"}



class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def page_tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def test_ldeq_constants_and_cost_are_tables_and_a_repeated_method_says_why(stage_report):
    _, out = stage_report
    page = (out / "index.html").read_text()
    tables = page_tables(page)
    assert next(t for t in tables if "constant" in t[0]) == [
        ["filter", "constant", "tuned on easy", "tuned on hard (optimistic bound)"],
        ["ema", "alpha", "0.500", "0.700"], ["one_euro", "min_cutoff", "1.000", "2.000"],
        ["one_euro", "beta", "0.020", "0.080"]]
    assert next(t for t in tables if "calls of f per frame" in t[0]) == [
        ["method", "calls of f per frame"], ["from scratch", "6.000"], ["RwR", "2.000"],
        ["RwR / from scratch", "0.333"]]
    assert "<pre>" not in page
    assert ("rwr_prox repeats rwr: the proximal weight γ tuned on the easy videos is 0 (tuning objective on the easy "
            "videos, lower is better: γ 0: 0.8100, γ 0.5: 0.9300)") in html.unescape(page)


def test_run_metrics_are_a_few_keys_per_file(stage_report):
    """The report stage's DVC metrics: counts per stage and status, subset sizes, NME against people's corrections
    per demo level and model, the labels' distance to the model reference per demo level."""
    inputs, _ = stage_report
    root = inputs.metrics / "report"
    files = {str(f.relative_to(root)): json.loads(f.read_text()) for f in root.rglob("*.json")}
    scores = pd.read_parquet(inputs.manifests / "scores.parquet")
    assert files["status/download/unavailable.json"] == {"videos": 1} and files["status/download/ok.json"] == {
        "videos": len(LEVELS)}
    assert files["status/trim/skipped.json"] == {"videos": 1}
    assert files["subsets/hard.json"] == {"videos": int((scores.subset == "hard").sum())}
    labels = {k: v for k, v in files.items() if k.startswith("labels/")}
    selected = set(scores.video_id[scores.subset.notna()])
    assert sorted(labels) == [f"labels/level{lvl}.json" for lvl in sorted({lvl for v, lvl in enumerate(LEVELS)
                                                                           if f"vid{v}" in selected})]
    assert all(set(v) == {"reference_distance", "frames"} for v in labels.values())
    corrections = {k: v for k, v in files.items() if k.startswith("corrections/")}
    hard_levels = sorted({LEVELS[int(v[3:])] for v in scores.video_id[scores.subset == "hard"]})
    assert sorted(corrections) == [f"corrections/level{lvl}/{model}.json" for lvl in hard_levels
                                   for model in sorted(["consensus", "consensus_raw", *OFFSETS])]
    assert all(set(v) == {"nme", "frames"} and v["frames"] == len(CORRECTED_FRAMES) for v in corrections.values())
    assert all(len(v) <= 2 for v in files.values())


def test_distances_to_the_model_reference_match_the_known_offsets(stage_report):
    inputs, out = stage_report
    summary = json.loads((out / "summary.json").read_text())
    demo = pd.read_parquet(inputs.demo_truth)
    ref = np.stack(demo.reference_landmarks.iloc[0])
    iod = float(np.linalg.norm(ref[60] - ref[72]))
    selected = set(pd.read_parquet(inputs.manifests / "annotations.parquet").video_id)
    levels = sorted({lvl for v, lvl in enumerate(LEVELS) if f"vid{v}" in selected})
    distance = {r["difficulty"]: r for r in summary["label_reference_distance"]}
    assert sorted(distance) == levels
    # consensus and the corrected (and propagated) frames alike lie sqrt(2) px from the reference
    assert all(np.isclose(r["reference_distance"], 100 * np.sqrt(2) / iod, rtol=1e-4) for r in distance.values())
    per_model = pd.DataFrame(summary["model_reference_distance"])
    for model, (dx, dy) in OFFSETS.items():
        rows = per_model[per_model.model == model]
        assert sorted(rows.difficulty) == sorted(set(LEVELS))
        assert np.allclose(rows.reference_distance, 100 * np.hypot(dx, dy) / iod, rtol=1e-4)
    assert set(per_model.model) == {*OFFSETS, "consensus"}
    page = html.unescape((out / "index.html").read_text())
    assert "<h2>Demo: labels against the model reference</h2>" in page and REFERENCE_NOTE in page
    section = page.split("<h2>Demo: labels against the model reference</h2>")[1].split("<h2>")[0]
    assert "truth" not in section.replace("not truth", "")  # nothing measured against the reference is called truth


def pre_correction_consensus(inputs: ReportInputs, video_id: str) -> np.ndarray:
    """The consensus the label stage's manifests give a video before any correction (the annotate stage's function,
    run here on the run's manifests)."""
    lm = rows_by_video(read_table(inputs.manifests / "landmarks.parquet", "landmarks"))[video_id]
    faces = rows_by_video(read_table(inputs.manifests / "faces.parquet", "faces"))[video_id]
    return video_labels(lm, SCORE, faces).points


def test_labels_against_peoples_corrections_per_level_and_model(stage_report):
    """The corrected frames are truth: each model's NME against the person's points is its offset from them; the
    consensus is judged before the correction (after it, it would be the person's points, NME 0)."""
    inputs, out = stage_report
    summary = json.loads((out / "summary.json").read_text())
    rows = pd.DataFrame(summary["corrections"])
    scores = pd.read_parquet(inputs.manifests / "scores.parquet")
    hard = sorted(scores.video_id[scores.subset == "hard"])
    level_of = {f"vid{v}": lvl for v, lvl in enumerate(LEVELS)}
    assert sorted(set(rows.level)) == sorted({level_of[v] for v in hard}) and rows.video_id.isna().all()
    assert (rows.frames == len(CORRECTED_FRAMES)).all()
    ref = shape98(80, 70, 25)
    iod = float(np.linalg.norm(ref[60] - ref[72]))  # the person's points are the reference shifted: same distance
    for model, offset in OFFSETS.items():
        got = rows[rows.model == model].nme.to_numpy()
        assert np.allclose(got, 100 * np.hypot(*np.subtract(offset, HUMAN_OFFSET)) / iod, rtol=1e-4)
    person = ref + np.float32(HUMAN_OFFSET)
    for vid in hard:
        before = pre_correction_consensus(inputs, vid)[list(CORRECTED_FRAMES)]
        expected = 100 * np.linalg.norm(before - person, axis=-1).mean() / iod
        got = rows[(rows.model == "consensus") & (rows.level == level_of[vid])].nme.item()
        assert got > 1 and np.isclose(got, expected, rtol=1e-4)
    assert list(rows.model[:2]) == ["consensus", "consensus_raw"]  # the consensus first in each group
    page = html.unescape((out / "index.html").read_text())
    assert "<h2>Labels against people's corrections (the run's landmark truth)</h2>" in page
    table = next(t for t in page_tables(page) if t[0][:2] == ["model", "family"] and
                 any(c.startswith("level") for c in t[0]) and any(r[0] == "consensus_raw" for r in t))
    assert table[0] == ["model", "family", *[f"level {level_of[v]}" for v in sorted(hard, key=level_of.get)]]
    # where a video has no demo level (not a demo clip), one group per video
    per_video = run_corrections(ReportInputs(inputs.manifests, inputs.metrics, inputs.plots, None), SCORE)
    assert per_video is not None and per_video.level.isna().all()
    assert sorted(set(per_video.video_id)) == hard
    lines = summary_lines(run_summary(inputs, SCORE))
    consensus = rows[rows.model == "consensus"].sort_values("level")
    assert ("consensus NME % vs people's corrections (before correction): " + ", ".join(
        f"L{r.level} {r.nme:.2f} ({r.frames} fr)" for r in consensus.itertuples())) in lines


def test_self_checks_per_model_say_where_a_model_did_not_vote(stage_report):
    inputs, out = stage_report
    page = (out / "index.html").read_text()
    assert "<h2>Self-checks: how much each model disagrees with itself (no ground truth needed)</h2>" in page
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())["self_checks"]}
    n_dlib = rows["dlib_68"]["frames"]
    assert rows["dlib_68"]["no_vote_share"] == pytest.approx(len(range(0, N_FRAMES, 4)) * n_dlib / N_FRAMES / n_dlib)
    assert rows["faceapi_68"]["no_vote_share"] == 0.0
    assert rows["faceapi_68"]["mirror_mean"] == pytest.approx(0.02) and rows["dlib_68"]["jitter_mean"] == \
        pytest.approx(0.01)


def test_a_run_without_corrections_says_so_in_one_line(tmp_path, astronaut):
    inputs = make_run(tmp_path, astronaut, corrected=False)
    head = run_summary(inputs, SCORE)
    assert head["corrections"] == []
    assert ("labels vs people's corrections: no corrected frame (the run has no landmark truth; python -m "
            "pipeline.review export|import)") in summary_lines(head)
    page, summary = build_report(inputs, tmp_path / "report", REPORT, SCORE, metrics_out=tmp_path / "m")
    section = page.split("<h2>Labels against people's corrections (the run's landmark truth)</h2>")[1]
    assert section.startswith("<p>No corrected frames: this run has no landmark truth")
    assert section.index("<h2>") < section.index("</p>") + 5  # one line, then the next section
    assert not (tmp_path / "m" / "corrections").exists()


def test_model_reference_distance_counts_only_the_points_a_model_defines():
    gt = shape98(80, 70, 25)
    pred = gt.copy()
    pred[50:] += 10  # wrong only where the mask says the model defines nothing
    mask = np.arange(98) < 50
    lm = pd.DataFrame({"video_id": ["a"], "frame": [0], "model": ["m"], "family": ["f"], "wflw98": [pred],
                       "mask": [mask]})
    demo = pd.DataFrame({"video_id": ["a"], "frame": [0], "difficulty": [2], "has_truth": [True],
                         "reference_landmarks": [gt]})
    result = model_reference_distance(lm, None, demo)
    assert result.to_dict("records") == [{"model": "m", "family": "f", "difficulty": 2, "frames": 1,
                                          "reference_distance": 0.0}]


def test_report_says_what_is_missing_instead_of_failing(tmp_path, astronaut):
    inputs = make_run(tmp_path, astronaut, complete=False)
    page, summary = build_report(inputs, tmp_path / "report", REPORT, SCORE)
    assert "<h1>WFLW-V pipeline report</h1>" in page
    for path in (inputs.manifests / "annotations.parquet", inputs.metrics / "evaluate.json",
                 inputs.plots / "ced.csv", inputs.demo_truth):
        assert str(path) in summary["missing"] and html.escape(str(path)) in page
    assert summary["renders"]  # renders and sheets still come from the manifests that exist
    assert (tmp_path / "report" / "sheets" / "hard_worst.png").is_file()
    lines = summary_lines(run_summary(inputs), tmp_path / "report")
    assert any(line.startswith("LDEQ: not evaluated yet") for line in lines)
    assert lines[0] == "videos: 7 listed; per stage:"


# --- headless Chromium over the DevTools protocol (--remote-debugging-pipe: JSON messages, NUL-terminated)

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's `chromium` is not installed "
                                                             "(apt-get install -y chromium; .ci/run does it)")


class Chromium:
    """A headless Chromium driven through the DevTools pipe: open a page, collect its console errors, check its
    images, take a full-page screenshot."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", "--hide-scrollbars"]

    def __init__(self, profile: Path, log: Path) -> None:
        profile.mkdir(parents=True)
        to_browser, self._to_us = os.pipe(), os.pipe()
        self._write = to_browser[1]
        self._read = self._to_us[0]

        def wire() -> None:  # the protocol's fixed descriptors: the browser reads fd 3 and writes fd 4
            # via fresh copies: the pipes may themselves sit on fds 3-6, and dup2 onto itself keeps close-on-exec
            read, write = os.dup(to_browser[0]), os.dup(self._to_us[1])
            os.dup2(read, 3)
            os.dup2(write, 4)

        self._log = log.open("wb")
        self.proc = subprocess.Popen([CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     preexec_fn=wire, close_fds=False)
        os.close(to_browser[0])
        os.close(self._to_us[1])
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._message(deadline))

    def open(self, url: str) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired")
        return session

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads) seen so far."""
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return found

    def broken_images(self, session: str) -> list[str]:
        script = "JSON.stringify([...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src))"
        value = self.call("Runtime.evaluate", {"expression": script, "returnByValue": True}, session)
        return json.loads(value["result"]["value"])

    def screenshot(self, session: str, path: Path, width: int = 1280) -> Path:
        size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        height = int(min(size["height"], 12000))
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._log.close()


@pytest.fixture()
def chromium(tmp_path):
    browser = Chromium(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


@needs_chromium
def test_the_browser_check_sees_console_errors_and_broken_images(tmp_path, chromium):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><meta charset=utf-8><title>t</title><img src="missing.png">'
                    '<script>console.error("deliberate"); console.log("fine")</script>')
    session = chromium.open(page.as_uri())
    assert chromium.broken_images(session) == [(tmp_path / "missing.png").as_uri()]
    assert any("deliberate" in e for e in chromium.errors())
    assert not any("fine" in e for e in chromium.errors())


@needs_chromium
def test_report_page_opens_in_chromium_without_errors(stage_report, chromium, tmp_path):
    _, out = stage_report
    session = chromium.open((out / "index.html").as_uri())
    assert chromium.errors() == []
    assert chromium.broken_images(session) == []
    shot = chromium.screenshot(session, tmp_path / "report.png")
    kept = ROOT / "test-artifacts" / "report_page.png"  # gitignored: for a person to look at
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)
    img = cv2.imread(str(shot))
    assert img.shape[1] == 1280 and img.shape[0] > 1500  # the whole page, not the first screen
    assert img.std() > 10
