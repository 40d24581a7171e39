"""The dataset card the annotate stage writes (``data/wflw_v/README.md``): on a small run built here through the
real score and annotate stages, every figure of the card is checked against the manifests it comes from."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from ldeq.metrics import nme
from pipeline.manifest import write_rows
from pipeline.params import PROJECT_PARAMS
from stages import annotate as annotate_stage
from stages import score as score_stage

N = 6
FAMILIES = [("dlib_68", "dlib_ert"), ("faceapi_68", "faceapi_cnn"), ("peppa_slim_160", "peppa_cnn")]
LICENCES = {"dlib_68": "CC0 per package; trained on iBUG 300-W (non-commercial terms)", "faceapi_68": "MIT",
            "peppa_slim_160": "Apache-2.0"}
NOISE = {"a_calm": 0.2, "b_mid": 1.0, "c_wild": 3.0}  # px of family disagreement: c is hard, a easy, b in between
LEVELS = {"a_calm": 0, "c_wild": 2}  # demo levels of the two videos with a model reference
BOX, TRUE_BOX = (100.0, 100.0, 200.0, 200.0), (105.0, 105.0, 205.0, 205.0)


def base_shape() -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.uniform(120, 180, (98, 2))
    pts[60], pts[72] = [125, 140], [175, 140]
    return pts.astype(np.float32)


def build_run(root):
    """Manifests of a 6-video run: two lost before labelling, three labelled and scored, one without a face."""
    m = root / "manifests"
    m.mkdir()
    base = base_shape()
    ids = ["a_calm", "b_mid", "c_wild", "d_noface", "gone", "late"]
    sources = [{"video_id": v, "url": f"https://example.org/{v}", "start_frame": 0, "end_frame": N - 1,
                "source_file": "list.csv", "source_line": k + 2} for k, v in enumerate(ids)]
    downloads = [{"video_id": v, "url": f"https://example.org/{v}", "status": "ok",
                  "license": "Creative Commons Attribution license (reuse allowed)" if v == "c_wild" else None,
                  "uploader": f"uploader of {v}", "upload_date": f"2019010{k + 1}",
                  "webpage_url": f"https://example.org/watch/{v}"} for k, v in enumerate(ids) if v != "gone"]
    downloads.append({"video_id": "gone", "url": "https://example.org/gone", "status": "unavailable",
                      "error": "HTTP Error 404: Not Found"})
    clips, faces, landmarks, faces_status, label_status, truth = [], [], [], [], [], []
    for v in ids:
        if v == "gone":
            clips.append({"video_id": v, "status": "skipped", "error": "download unavailable: HTTP Error 404"})
            continue
        if v == "late":
            clips.append({"video_id": v, "status": "bad_window", "error": "window 0..5 of a 3-frame source"})
            continue
        clip = root / f"{v}.mp4"
        clip.write_bytes(v.encode())  # the export links the clip; its content is not read here
        clips.append({"video_id": v, "status": "ok", "path": str(clip), "n_frames": N, "fps": 25.0})
        faces_status.append({"stage": "faces", "video_id": v, "status": "ok", "n_frames": N})
        label_status.append({"stage": "label", "video_id": v, "status": "ok", "n_frames": N})
        rng = np.random.default_rng(len(v))
        for f in range(N):
            ok = v != "d_noface"
            faces.append({"video_id": v, "frame": f, "track_id": 0, "detector": "d", "n_detections": int(ok),
                          "det_score": 0.9 if ok else None, "source": "detected" if ok else "none", "valid": ok,
                          "x1": BOX[0] if ok else np.nan, "y1": BOX[1], "x2": BOX[2], "y2": BOX[3]})
            if v in LEVELS:
                truth.append({"video_id": v, "frame": f, "media": "still", "difficulty": LEVELS[v],
                              "scenario": "camera", "has_truth": True, "visible": True,
                              **dict(zip(("x1", "y1", "x2", "y2"), TRUE_BOX)), "reference_landmarks": base})
            if not ok:
                continue
            for model, family in FAMILIES:
                pts = (base + rng.normal(0, NOISE[v], (98, 2))).astype(np.float32)
                landmarks.append({"video_id": v, "frame": f, "model": model, "family": family, "scheme": "wflw98",
                                  "points": pts, "wflw98": pts, "mask": np.ones(98, bool), "confidence": 0.9,
                                  "licence": LICENCES[model]})
    for s in ("faces", "label"):
        for v in ("gone", "late"):
            (faces_status if s == "faces" else label_status).append(
                {"stage": s, "video_id": v, "status": "skipped", "error": "trim skipped"})
    for rows, name, file in ((sources, "sources", "sources"), (downloads, "downloads", "downloads"),
                             (clips, "clips", "clips"), (faces, "faces", "faces"),
                             (landmarks, "landmarks", "landmarks"), (faces_status, "video_status", "faces_status"),
                             (label_status, "video_status", "label_status")):
        write_rows(rows, name, m / f"{file}.parquet")
    write_rows(truth, "demo_truth", root / "truth.parquet")
    corrections = root / "corrections"
    corrections.mkdir()
    person = base + np.float32(1.0)  # a reviewer moved every point of frame 2 of the hard video
    write_rows([{"video_id": "c_wild", "frame": 2, "landmarks": person, "width": 320, "height": 240,
                 "annotator": "a@b.c", "annotated_at": "2026-01-01T00:00:00Z", "export_file": "x.json"}],
               "corrections", corrections / "round1.parquet")
    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    params["score"]["n_hard"] = 1
    params["annotate"].update(export_dir=str(root / "wflw_v"), corrections=str(corrections))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return m


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    m = build_run(root)
    common = ["--params", str(root / "params.yaml"), "--landmarks", str(m / "landmarks.parquet"),
              "--faces", str(m / "faces.parquet")]
    assert score_stage.main(common + ["--label-status", str(m / "label_status.parquet"),
                                      "--out", str(m / "scores.parquet")]) == 0
    assert annotate_stage.main(common + [
        "--scores", str(m / "scores.parquet"), "--clips", str(m / "clips.parquet"),
        "--out", str(m / "annotations.parquet"), "--status-out", str(m / "annotate_status.parquet"),
        "--sources", str(m / "sources.parquet"), "--downloads", str(m / "downloads.parquet"),
        "--faces-status", str(m / "faces_status.parquet"), "--label-status", str(m / "label_status.parquet"),
        "--demo-truth", str(root / "truth.parquet")]) == 0
    return root, m, (root / "wflw_v" / "README.md").read_text()


def table_rows(card: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row starts with ``header``."""
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_counts_and_statuses_match_the_manifests(run):
    root, m, card = run
    scores = pd.read_parquet(m / "scores.parquet").set_index("video_id")
    ann = pd.read_parquet(m / "annotations.parquet")
    assert scores.subset.dropna().to_dict() == {"a_calm": "easy", "c_wild": "hard"}
    assert "6 source videos, 2 exported." in card
    for subset, videos, frames, valid in table_rows(card, "subset"):
        mine = ann[ann.subset == subset]
        assert (int(videos), int(frames), int(valid)) == (mine.video_id.nunique(), len(mine), int(mine.valid.sum()))
    statuses = dict(table_rows(card, "stage"))
    for stage, file in (("download", "downloads"), ("trim", "clips"), ("faces", "faces_status"),
                        ("label", "label_status"), ("score", "scores"), ("annotate", "annotate_status")):
        counts = pd.read_parquet(m / f"{file}.parquet").status.value_counts()
        assert statuses[stage] == ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), stage
    lost = {r[0]: r[1:] for r in table_rows(card, "video")}
    assert set(lost) == {"b_mid", "d_noface", "gone", "late"}  # every source not exported
    assert lost["gone"] == ["download", "unavailable", "HTTP Error 404: Not Found"]
    assert lost["late"][:2] == ["trim", "bad_window"]
    assert lost["d_noface"][:2] == ["score", "unlabelable"] and lost["d_noface"][2] == scores.loc["d_noface", "error"]
    assert lost["b_mid"][:2] == ["score", "between"]


def test_label_quality_against_people_and_against_the_model_reference(run):
    root, m, card = run
    ann = pd.read_parquet(m / "annotations.parquet")
    human = ann[ann.label_source == "human"]
    assert len(human) == 1
    raw, person = np.stack(human.landmarks_raw.iloc[0]).astype(np.float64), np.stack(human.landmarks.iloc[0])
    expected = 100 * nme(raw[None], person[None].astype(np.float64))[0]
    assert table_rows(card, "subset", )  # the composition table exists; the corrections table follows
    (subset, frames, value), = table_rows(card, "subset | corrected frames")
    assert (subset, int(frames), float(value)) == ("hard", 1, pytest.approx(expected, abs=0.005))
    truth = pd.read_parquet(root / "truth.parquet")
    merged = ann[ann.valid].merge(truth, on=["video_id", "frame"])
    rows = {int(r[0]): r[1:] for r in table_rows(card, "demo level")}
    assert sorted(rows) == sorted(LEVELS.values())
    inter = 95.0 * 95.0
    iou = inter / (2 * 100.0 * 100.0 - inter)  # the tracked box against the exact box, 5 px off in x and y
    for level, (frames, distance, box_iou) in rows.items():
        mine = merged[merged.difficulty == level]
        pred = np.stack([np.stack(p) for p in mine.landmarks]).astype(np.float64)
        ref = np.stack([np.stack(p) for p in mine.reference_landmarks]).astype(np.float64)
        assert int(frames) == len(mine)
        assert float(distance) == pytest.approx(100 * nme(pred, ref).mean(), abs=0.005)
        assert float(box_iou) == pytest.approx(iou, abs=0.005)
    assert "not accuracy" in card and "model reference" in card
    assert not re.search(r"(?i)NME vs ground truth|accuracy against the reference", card)


def test_build_models_and_licences(run):
    root, m, card = run
    assert re.search(r"Code: annotate stage import closure, SHA-256 `[0-9a-f]{16}`", card)
    assert "Upload dates of the sources: 20190101 to 20190106." in card
    assert "`list.csv` (6 rows)" in card
    models = {r[0]: r for r in table_rows(card, "model")}
    lm = pd.read_parquet(m / "landmarks.parquet")
    for model, family in FAMILIES:
        assert models[model][1] == family and int(models[model][3]) == (lm.model == model).sum()
        assert models[model][4] == LICENCES[model]
    assert "**dlib's 68-point model was trained on iBUG 300-W" in card and "not for commercial use" in card
    assert "NVIDIA's non-commercial licence" in card
    videos = {r[0]: r for r in table_rows(card, "video | subset | licence")}
    assert videos["c_wild"][2] == "Creative Commons Attribution license (reuse allowed)"
    assert videos["a_calm"][2] == "not stated by the source" and videos["a_calm"][5] == "https://example.org/watch/a_calm"
    assert "1 Creative Commons Attribution license (reuse allowed), 1 not stated by the source" in card
    assert card.startswith("---\npretty_name:")


def test_the_card_is_the_same_bytes_on_a_rebuild(run, tmp_path):
    root, m, card = run
    from pipeline.card import CardInputs, write_card
    from pipeline.params import stage_params

    params = root / "params.yaml"
    inputs = CardInputs(root / "wflw_v", m / "sources.parquet", m / "downloads.parquet", m / "clips.parquet",
                        m / "faces_status.parquet", m / "label_status.parquet", m / "scores.parquet",
                        m / "annotations.parquet", m / "landmarks.parquet", root / "truth.parquet",
                        pd.read_parquet(m / "annotate_status.parquet").to_dict("records"))
    write_card(inputs, stage_params("annotate", params), stage_params("score", params), tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == card
