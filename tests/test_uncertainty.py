import numpy as np
import pyarrow as pa

from pipeline.manifest import read_table, write_rows
from pipeline.uncertainty import frame_consensus, select_subsets, video_score


def rows_for(video_id, spread, frames=3):
    out = []
    for f in range(frames):
        base = np.zeros((98, 2), np.float32)
        base[:, 0] = np.arange(98)
        for model, family, shift in (("a", "fa", 0.0), ("b", "fb", spread)):
            out.append({"video_id": video_id, "frame": f, "model": model, "family": family, "scheme": "wflw98",
                        "points": base + [shift, 0], "wflw98": base + [shift, 0], "mask": np.ones(98, bool)})
    return out


def test_disagreement_orders_videos_and_selects_hard(tmp_path):
    rows = rows_for("calm", 0.1) + rows_for("wild", 3.0) + rows_for("mid", 1.0)
    write_rows(rows, "landmarks", tmp_path / "l.parquet")
    table = read_table(tmp_path / "l.parquet", "landmarks")
    scores = []
    for vid in ("calm", "wild", "mid"):
        sub = table.filter(pa.compute.equal(table.column("video_id"), vid))
        fc = frame_consensus(sub)
        assert fc.points.shape == (3, 98, 2) and fc.n_models == 2
        scores.append(video_score(vid, fc, min_models=2))
    # two models shifted by s along x: each sits s/2 from the consensus; inter-ocular = |60 - 72| = 12
    assert np.isclose(scores[1]["uncertainty"], 1.5 / 12)
    selected = select_subsets(scores, n_hard=1)
    assert [(r["video_id"], r["rank"], r["subset"]) for r in selected] == [
        ("calm", 3, "easy"), ("wild", 1, "hard"), ("mid", 2, "easy")]


def test_too_few_models_is_a_status_not_a_score(tmp_path):
    rows = [r for r in rows_for("solo", 1.0) if r["model"] == "a"]
    write_rows(rows, "landmarks", tmp_path / "l.parquet")
    row = video_score("solo", frame_consensus(read_table(tmp_path / "l.parquet", "landmarks")), min_models=2)
    assert row["status"] == "model_error" and "needs >= 2" in row["error"]
    assert select_subsets([row], n_hard=1)[0].get("subset") is None


def test_n_hard_larger_than_scored_takes_half():
    rows = [{"video_id": f"v{i}", "status": "ok", "uncertainty": float(i)} for i in range(5)]
    subsets = [r["subset"] for r in select_subsets(rows, n_hard=500)]
    assert subsets.count("hard") == 3
