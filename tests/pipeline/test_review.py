"""Review round trip without the tool: export from a real small project, import the Label Studio export that a real
Label Studio run produced (tests/fixtures/review/labelstudio_export.json, recorded by test_review_labelstudio.py),
annotate with the corrections."""

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import review_project as rp

from ldeq.wflw import POINT_NAMES, REGION_POINTS
from pipeline.inspect import explain_video
from pipeline.params import PROJECT_PARAMS, stage_params
from pipeline.report import ReportInputs, run_summary, summary_lines
from pipeline.review import ChosenFrame, choose_frames, main
from pipeline.video import read_frames

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "review" / "labelstudio_export.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The review project built once (score + annotate run), then exported; tests work on copies."""
    root = tmp_path_factory.mktemp("review")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        built = rp.build(root)
        assert main(["export"]) == 0
    return built


@pytest.fixture
def work(project, tmp_path, monkeypatch):
    """A private copy of the built project, as the working directory."""
    root = tmp_path / "p"
    shutil.copytree(project["root"], root)
    monkeypatch.chdir(root)
    return root


def annotations(root: Path) -> pd.DataFrame:
    ann = pd.read_parquet(root / "manifests" / "annotations.parquet")
    return ann[ann.video_id == rp.VIDEO_ID].set_index("frame")


def px(result: list[dict], size: tuple[int, int]) -> np.ndarray:
    """Label Studio keypoints (percent of the image, from its corner) → (98, 2) pixels, centres at integers."""
    out = np.full((98, 2), np.nan)
    for item in result:
        out[POINT_NAMES.index(item["value"]["keypointlabels"][0])] = (item["value"]["x"] * size[0] / 100 - 0.5,
                                                                       item["value"]["y"] * size[1] / 100 - 0.5)
    return out


def test_export_chooses_frames_and_writes_the_same_bytes_twice(work, capsys):
    tasks = json.loads((work / "review" / "tasks.json").read_text())
    chosen = {t["data"]["frame"]: t["data"]["reason"] for t in tasks}
    # 24 frames, keyframes <= 10 apart from first to last; the invalid frames (11, 12: families disagree) come first,
    # min_gap 3 keeps one of them; the second pick is the most uncertain valid frame away from the others
    assert [f for f, r in chosen.items() if r == "keyframe"] == [0, 8, 15, 23]
    assert [f for f, r in chosen.items() if r == "invalid"] == [12]
    uncertain = [f for f, r in chosen.items() if r == "uncertain"]
    assert len(uncertain) == 1 and min(abs(uncertain[0] - f) for f in chosen if f != uncertain[0]) >= 3
    ann = annotations(work)
    for task in tasks:
        data, result = task["data"], task["predictions"][0]["result"]
        assert data["video_id"] == rp.VIDEO_ID and (data["width"], data["height"]) == rp.SIZE
        assert [r["value"]["keypointlabels"][0] for r in result] == list(POINT_NAMES)
        regions = {r["value"]["keypointlabels"][0]: r["from_name"] for r in result}
        assert all(regions[POINT_NAMES[i]] == region for region, idx in REGION_POINTS.items() for i in idx)
        # the pre-annotation is the consensus, to the 4 decimals of a percent Label Studio is given
        consensus = np.stack(ann.loc[data["frame"], "landmarks"])
        assert np.abs(px(result, rp.SIZE) - consensus).max() < 0.03
        assert data["image"] == f"/data/local-files/?d=review/images/{rp.VIDEO_ID}/{data['frame']:06d}.png"
    # images are the decoded clip frames, losslessly
    frame = max(chosen)
    png = cv2.cvtColor(cv2.imread(str(work / "review" / "images" / rp.VIDEO_ID / f"{frame:06d}.png")),
                       cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, read_frames(work / "clips" / f"{rp.VIDEO_ID}.mp4", [frame])[0])
    # the labelling config: one keypoint control per region, every point named once
    root = ET.fromstring((work / "review" / "config.xml").read_text())
    controls = root.findall(".//KeyPointLabels")
    assert [c.get("name") for c in controls] == list(REGION_POINTS)
    assert [label.get("value") for c in controls for label in c.findall("Label")] == list(POINT_NAMES)
    # re-run: the same bytes, and images no longer chosen are removed
    before = {p: p.read_bytes() for p in sorted((work / "review").rglob("*")) if p.is_file()}
    stale = work / "review" / "images" / rp.VIDEO_ID / "000005.png"
    stale.write_bytes(b"old export")
    assert main(["export"]) == 0
    assert {p: p.read_bytes() for p in sorted((work / "review").rglob("*")) if p.is_file()} == before
    assert "6 frames of 1 video(s) (1 invalid, 4 keyframe, 1 uncertain)" in capsys.readouterr().out


def test_choose_frames_rules():
    params = stage_params("review", PROJECT_PARAMS, frames_per_video=2, keyframe_step=10, min_gap=3)
    n = 30
    labellable = np.ones(n, bool)
    labellable[:3] = labellable[20:23] = False  # no face at the start; a gap where keyframe 21 would fall
    valid = np.ones(n, bool)
    valid[[6, 7]] = False
    u = np.linspace(0.1, 0.2, n)  # later frames more uncertain
    dis = np.full(n, 0.1)
    dis[7] = 0.5
    done = np.zeros(n, bool)
    picks = choose_frames(labellable, valid, u, dis, done, params)
    # keyframes: 3..29 in steps <= 10 → 3, 12, 20 → 19 (nearest labellable), 29; then the invalid frame with the most
    # disagreement (7; 6 is too close to it), then the most uncertain valid frame >= 3 frames from the others (26)
    assert [(p.frame, p.reason) for p in picks] == [(3, "keyframe"), (7, "invalid"), (12, "keyframe"),
                                                    (19, "keyframe"), (26, "uncertain"), (29, "keyframe")]
    assert picks[1].detail == "families disagree: 0.500" and picks[4].detail == "uncertainty 0.190"
    # frames a person already corrected are not sent again (they still keep others min_gap away)
    done[[7, 12]] = True
    again = choose_frames(labellable, valid, u, dis, done, params)
    assert [p.frame for p in again] == [3, 6, 19, 26, 29]
    assert choose_frames(np.zeros(n, bool), valid, u, dis, done, params) == []
    assert isinstance(picks[0], ChosenFrame)


def test_import_real_labelstudio_export_then_annotate(work, capsys):
    export = json.loads(FIXTURE.read_text())
    submitted = {t["data"]["frame"]: t["annotations"][-1] for t in export if t["annotations"]}
    assert main(["import", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert f"{len(submitted)} corrected frames of 1 video(s) by user 1; {len(export) - len(submitted)} tasks not " \
           f"submitted -> corrections/labelstudio_export.parquet" in out
    corr = pd.read_parquet(work / "corrections" / "labelstudio_export.parquet").set_index("frame")
    assert sorted(corr.index) == sorted(submitted)
    for frame, annotation in submitted.items():
        assert corr.loc[frame, "annotated_at"] == annotation["updated_at"]
        assert corr.loc[frame, "annotation_id"] == annotation["id"] and corr.loc[frame, "annotator"] == "user 1"
        assert np.allclose(np.stack(corr.loc[frame, "landmarks"]), px(annotation["result"], rp.SIZE), atol=1e-3)
    before = annotations(work)
    assert rp.annotate() == 0
    after = annotations(work)
    truth = rp.truth_points()
    err = {f: np.linalg.norm(np.stack(after.loc[f, "landmarks"]) - truth[f], axis=-1).mean() for f in after.index}
    pseudo = {f: np.linalg.norm(np.stack(before.loc[f, "landmarks"]) - truth[f], axis=-1).mean() for f in after.index}
    # the person placed the true points on the corrected frames (what the recorded run submitted)
    for frame in submitted:
        assert after.loc[frame, "label_source"] == "human" and after.loc[frame, "valid"]
        assert np.allclose(np.stack(after.loc[frame, "landmarks"]), np.stack(corr.loc[frame, "landmarks"]))
    # corrected frames whose consensus was valid anchor the interpolation (the invalid frame 12 does not)
    anchors = sorted(f for f in submitted if before.loc[f, "valid"] and before.loc[f, "label_source"] != "bridged")
    between = [f for a, b in zip(anchors, anchors[1:]) for f in range(a + 1, b) if f not in submitted]
    assert anchors == [0, 8, 15] and sorted(after.index[after.label_source == "propagated"]) == between
    smooth = [f for f in between if f not in rp.INVALID]
    assert all(pseudo[f] > 2.5 and err[f] < 0.5 for f in smooth)  # the ~3 px family bias is gone
    # an invalid frame in between takes the offset too, and stays invalid (its consensus was broken on its own)
    assert 11 in between and not after.loc[11, "valid"] and err[11] < pseudo[11]
    outside = [f for f in after.index if f not in submitted and f not in between]
    assert all(after.loc[f, "label_source"] == "pseudo" for f in outside)
    assert all(np.array_equal(np.stack(after.loc[f, "landmarks"]), np.stack(before.loc[f, "landmarks"]))
               for f in outside)
    # inspect and the report count them
    n_human, n_prop = len(submitted), len(between)
    why = explain_video(rp.VIDEO_ID, work / "manifests", stage_params("score", work / "params.yaml"))
    assert why[-1] == (f"  labels: {n_human} human, {n_prop} propagated, {rp.N_FRAMES - n_human - n_prop} pseudo, "
                       f"0 bridged frames; corrected: {', '.join(str(f) for f in sorted(submitted))}")
    summary = run_summary(ReportInputs(work / "manifests", work / "metrics", work / "plots", None))
    assert summary["labels"] == {"human": n_human, "propagated": n_prop, "pseudo": 2 * rp.N_FRAMES - n_human - n_prop,
                                 "bridged": 0}
    assert any(line.startswith(f"labels: {n_human} human, {n_prop} propagated, ") for line in summary_lines(summary))


def _broken(export: list[dict], task_index: int, change) -> list[dict]:
    out = copy.deepcopy(export)
    change(out[task_index])
    return out


def test_import_rejects_bad_exports_one_line_each_and_writes_nothing(work, capsys):
    export = json.loads(FIXTURE.read_text())
    done = [i for i, t in enumerate(export) if t["annotations"]]
    a, b, c = done[:3]

    def unknown(task):
        task["data"]["frame"] = 999

    def missing(task):
        task["annotations"][-1]["result"] = [r for r in task["annotations"][-1]["result"]
                                             if r["value"]["keypointlabels"][0] not in ("left_eye_03", "contour_00")]

    def outside(task):
        task["annotations"][-1]["result"][5]["value"]["x"] = 104.0

    bad = _broken(_broken(_broken(export, a, unknown), b, missing), c, outside)
    path = work / "bad_export.json"
    path.write_text(json.dumps(bad))
    assert main(["import", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    ids = [export[i]["id"] for i in (a, b, c)]
    frames = [export[i]["data"]["frame"] for i in (a, b, c)]
    assert lines == [
        f"error: {path}: task {ids[0]} ({rp.VIDEO_ID} frame 999): unknown task: not in the review export's tasks.json",
        f"error: {path}: task {ids[1]} ({rp.VIDEO_ID} frame {frames[1]}): missing point(s) contour_00, left_eye_03: "
        "all 98 must be placed",
        f"error: {path}: task {ids[2]} ({rp.VIDEO_ID} frame {frames[2]}): point(s) outside the 480x360 image: "
        "contour_05 (104.0%, " + f"{bad[c]['annotations'][-1]['result'][5]['value']['y']:.1f}%)",
    ]
    assert not (work / "corrections" / "bad_export.parquet").exists()
    path.write_text(json.dumps({"not": "a list"}))
    assert main(["import", str(path)]) == 2
    assert "expected a list of tasks, found dict" in capsys.readouterr().err
    assert main(["import", str(work / "absent.json")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {work / 'absent.json'}: file not found"
