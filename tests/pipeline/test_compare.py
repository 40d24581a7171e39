"""Run comparison: rows matched by id, exact columns equal, float columns counted per row beyond the tolerance; the
exit status says whether the dataset's structure (ids, statuses, subsets, valid flags) or only its values differ."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.compare import TOLERANCE, compare_dirs, compare_tables, main
from pipeline.kernels import KERNEL_LEVEL
from pipeline.manifest import KERNEL_LEVEL_KEY, write_rows

ROOT = Path(__file__).resolve().parents[2]


def annotation_rows(n_videos=2, n_frames=3, seed=0):
    """Rows of a small annotations manifest: two videos, 98 points per frame."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        for f in range(n_frames):
            rows.append({"video_id": f"v{v}", "frame": f, "subset": "hard" if v == 0 else "easy",
                         "x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 120.0,
                         "landmarks": rng.uniform(0, 100, (98, 2)).astype(np.float32), "n_models": 6,
                         "disagreement": 0.1, "valid": True, "label_source": "pseudo"})
    return rows


def status_rows(status="ok"):
    return [{"stage": "label", "video_id": "v0", "status": status, "n_frames": 3},
            {"stage": "label", "video_id": "v1", "status": "ok", "n_frames": 3}]


def write_run(folder: Path, annotations, statuses) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_rows(annotations, "annotations", folder / "annotations.parquet")
    write_rows(statuses, "video_status", folder / "label_status.parquet")
    return folder


def moved(rows, video, frame, point, dx):
    out = [dict(r, landmarks=r["landmarks"].copy()) for r in rows]
    target = next(r for r in out if r["video_id"] == video and r["frame"] == frame)
    target["landmarks"][point, 0] += dx
    return out


def test_manifests_record_the_kernel_level_they_were_computed_at(tmp_path):
    table = write_rows(annotation_rows(), "annotations", tmp_path / "a.parquet")
    level = json.loads(pq.read_schema(tmp_path / "a.parquet").metadata[KERNEL_LEVEL_KEY.encode()])
    assert level["level"] == KERNEL_LEVEL and level["numpy"] == "X86_V3" and level["mkl_cbwr"] == "COMPATIBLE"
    assert table.schema.metadata[b"manifest"] == b"annotations"


def test_same_runs_are_identical_and_small_moves_within_tolerance(tmp_path):
    rows = annotation_rows()
    a = write_run(tmp_path / "a", rows, status_rows())
    b = write_run(tmp_path / "b", moved(rows, "v1", 2, 5, TOLERANCE / 2), status_rows())
    assert [r.verdict for r in compare_dirs(a, a)] == ["identical", "identical"]
    result = {r.name: r for r in compare_dirs(a, b)}
    near = result["annotations.parquet"]
    assert near.verdict == "within_tolerance" and near.rows_beyond == 0 and near.worst_column == "landmarks"
    assert abs(near.max_float_diff - TOLERANCE / 2) < 1e-5


def test_frames_beyond_tolerance_are_counted_with_the_largest_difference(tmp_path, capsys):
    rows = annotation_rows()
    far = moved(moved(rows, "v0", 1, 40, 1.78), "v1", 0, 3, -0.2)
    far = [dict(r, disagreement=0.1 + 1e-6) for r in far]  # every frame moves a little: only two beyond
    a, b = write_run(tmp_path / "a", rows, status_rows()), write_run(tmp_path / "b", far, status_rows())
    result = next(r for r in compare_dirs(a, b) if r.name == "annotations.parquet")
    assert result.verdict == "beyond_tolerance" and (result.rows_beyond, result.rows) == (2, 6)
    assert abs(result.max_float_diff - 1.78) < 1e-4 and result.worst_column == "landmarks"
    assert main([str(a), str(b)]) == 3  # only values moved: not the same as a different dataset
    out = capsys.readouterr().out
    assert "annotations.parquet: beyond_tolerance (2 of 6 rows beyond 0.05, largest 1.78 in landmarks)" in out


def test_rows_are_matched_by_id_not_by_position(tmp_path):
    rows = annotation_rows()
    a = write_run(tmp_path / "a", rows, status_rows())
    b = write_run(tmp_path / "b", list(reversed(rows)), list(reversed(status_rows())))
    assert [r.verdict for r in compare_dirs(a, b)] == ["identical", "identical"]


def test_ids_statuses_subsets_and_valid_flags_must_be_equal(tmp_path, capsys):
    rows = annotation_rows()
    a = write_run(tmp_path / "a", rows, status_rows())
    cases = {
        "status": (rows, status_rows("error")),
        "subset": ([dict(r, subset="easy") if r["video_id"] == "v0" else r for r in rows], status_rows()),
        "valid": ([dict(r, valid=r["frame"] != 1) for r in rows], status_rows()),
        "ids": (rows[:-1], status_rows()),
    }
    for what, (annotations, statuses) in cases.items():
        b = write_run(tmp_path / what, annotations, statuses)
        results = {r.name: r for r in compare_dirs(a, b)}
        bad = [r for r in results.values() if r.verdict == "different"]
        assert len(bad) == 1, what
        assert (what if what != "ids" else "ids differ") in bad[0].reason, (what, bad[0].reason)
        assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "column valid differs in 2 of 6 rows" in out and "column subset differs in 3 of 6 rows" in out
    assert "ids differ (video_id/frame): 1 only in the first, 0 only in the second" in out


def test_a_value_on_one_side_only_is_beyond_tolerance():
    base = pa.table({"video_id": ["a", "b"], "roll": pa.array([1.0, None], pa.float32())})
    other = pa.table({"video_id": ["a", "b"], "roll": pa.array([1.0, 2.0], pa.float32())})
    result = compare_tables("t", base, other)
    assert result.verdict == "beyond_tolerance" and result.rows_beyond == 1 and result.max_float_diff == np.inf


def test_differing_kernel_levels_are_named(tmp_path):
    table = pa.table({"video_id": ["a"], "x": [1.0]})
    other = table.replace_schema_metadata({KERNEL_LEVEL_KEY: '{"level": "custom"}'})
    result = compare_tables("t", table.replace_schema_metadata({KERNEL_LEVEL_KEY: '{"level": "x86-64-v3"}'}), other)
    assert result.verdict == "identical" and result.kernel_levels == ('{"level": "x86-64-v3"}', '{"level": "custom"}')


def test_a_missing_or_empty_folder_is_one_line(tmp_path, capsys):
    a = write_run(tmp_path / "a", annotation_rows(), status_rows())
    (tmp_path / "empty").mkdir()
    for b, says in ((tmp_path / "nowhere", f"error: {tmp_path / 'nowhere'}: no such folder\n"),
                    (tmp_path / "empty", f"error: {tmp_path / 'empty'}: no manifest (*.parquet) in this folder\n")):
        assert main([str(a), str(b)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == says
    assert main([str(a), str(a), "--tolerance", "-1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "annotations.parquet").write_bytes(b"not parquet")
    assert main([str(a), str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'c' / 'annotations.parquet'}: not a readable")


def test_the_command_line_reports_one_line_per_manifest(tmp_path):
    a = write_run(tmp_path / "a", annotation_rows(), status_rows())
    b = write_run(tmp_path / "b", annotation_rows(), status_rows())
    (tmp_path / "b" / "extra.parquet").write_bytes((a / "label_status.parquet").read_bytes())
    done = subprocess.run([sys.executable, "-m", "pipeline.compare", str(a), str(b)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and done.stderr == ""
    assert done.stdout.splitlines() == [
        "annotations.parquet: identical (0 of 6 rows beyond 0.05, largest 0)",
        f"extra.parquet: different: missing in {a}",
        "label_status.parquet: identical",
    ]
