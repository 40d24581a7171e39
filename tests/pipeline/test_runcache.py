"""The per-video run cache: keys from code, params and inputs; atomic entries; report and prune."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.manifest import rows_table
from pipeline.params import stage_params
from pipeline.runcache import StageCache, code_digest, file_digest, link_media, run_cached, run_job, table_digest

ROOT = Path(__file__).resolve().parents[2]


def _frames(video_id: str, n: int) -> list[dict]:
    return [{"stage": "faces", "video_id": video_id, "status": "ok", "n_frames": i} for i in range(n)]


def _writer(item: dict, work_dir: Path, **_: object) -> dict:
    """A task that writes a media file and per-frame rows (video_status rows stand in for frames)."""
    (work_dir / f"{item['video_id']}.bin").write_bytes(item["video_id"].encode() * 3)
    return {"status": {"video_id": item["video_id"], "status": "ok", "error": None,
                       "path": str(work_dir / f"{item['video_id']}.bin")},
            "rows": _frames(item["video_id"], item["n"])}


def test_table_digest_ignores_chunking_and_metadata_not_content():
    rows = rows_table(_frames("a", 5), "video_status")
    chunked = pa.concat_tables([rows.slice(0, 2), rows.slice(2)])
    assert table_digest(rows) == table_digest(chunked) == table_digest(rows.replace_schema_metadata({"x": "y"}))
    assert table_digest(rows) != table_digest(rows.slice(1))


def test_code_digest_follows_the_stage_closure_and_its_data_files(tmp_path):
    for item in ("pipeline", "stages", "ldeq"):
        shutil.copytree(ROOT / item, tmp_path / item, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_digest("stages.label", tmp_path)
    assert code_digest("stages.faces", tmp_path) != before
    (tmp_path / "pipeline" / "demo" / "build.py").write_text("# not imported by the label stage\n")
    assert code_digest("stages.label", tmp_path) == before
    with (tmp_path / "pipeline" / "landmarks" / "weights.json").open("a") as fh:
        fh.write("\n")  # data beside a module the stage imports
    after_data = code_digest("stages.label", tmp_path)
    assert after_data != before
    with (tmp_path / "pipeline" / "manifest.py").open("a") as fh:
        fh.write("# an edit\n")
    assert code_digest("stages.label", tmp_path) not in (before, after_data)


def test_keys_follow_params_and_inputs(tmp_path):
    faces = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))
    assert faces.key("v", {"clip": "a"}) != faces.key("v", {"clip": "b"})
    assert faces.key("v", {"clip": "a"}) != faces.key("w", {"clip": "a"})
    other = StageCache.for_stage(tmp_path, "faces", stage_params("faces", max_gap=3))
    assert other.fingerprint != faces.fingerprint
    again = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))
    assert again.key("v", {"clip": "a"}) == faces.key("v", {"clip": "a"})


def test_entries_are_stored_whole_and_reused(tmp_path):
    cache = StageCache.for_stage(tmp_path / "cache", "faces", stage_params("faces"))
    key = cache.key("v1", {"n": 3})
    assert cache.lookup(key) is None
    result = run_cached(_writer, {"video_id": "v1", "n": 3}, cache, key, "video_status")
    assert result["stored"] and result["status"]["path"] == "v1.bin"  # media named inside the entry
    hit = cache.lookup(key)
    assert hit is not None and hit.status["video_id"] == "v1"
    assert [p.name for p in hit.media] == ["v1.bin"]
    assert pq.read_table(hit.frames).num_rows == 3
    out = tmp_path / "out"
    link_media(hit.media, out)
    assert (out / "v1.bin").read_bytes() == b"v1v1v1"
    assert not any((cache.folder / ".tmp").iterdir())  # nothing half-written left behind


def test_error_rows_are_not_stored(tmp_path):
    cache = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))

    def failing(item: dict, work_dir: Path) -> dict:
        return {"status": {"video_id": "v", "status": "error", "error": "boom"}, "rows": []}

    assert not run_cached(failing, {}, cache, "k" * 64, "video_status")["stored"]
    assert cache.lookup("k" * 64) is None


def test_a_killed_attempt_leaves_no_entry_and_is_counted(tmp_path):
    """A process killed mid-task (kill -9) leaves only its temporary folder; the next attempt says it is a retry."""
    cache = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))
    key = cache.key("v1", {})
    script = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pathlib import Path\n"
              "from pipeline.params import stage_params\n"
              "from pipeline.runcache import StageCache, run_cached\n"
              f"cache = StageCache.for_stage(Path({str(tmp_path)!r}), 'faces', stage_params('faces'))\n"
              "def die(item, work_dir):\n"
              "    (work_dir / 'half.bin').write_bytes(b'x')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"run_cached(die, {{}}, cache, {key!r}, 'video_status')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=False)
    assert proc.returncode == -9
    assert cache.lookup(key) is None and len(list((cache.folder / ".tmp").iterdir())) == 1
    result = run_job({"item": {"video_id": "v1", "n": 2}, "key": key}, _writer, cache, "video_status")
    assert result["attempt"] == 2 and cache.lookup(key) is not None
    assert not list((cache.folder / ".tmp").iterdir())


def test_file_digest_sees_a_replaced_file(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"one")
    first = file_digest(media, tmp_path / "cache")
    assert file_digest(media, tmp_path / "cache") == first
    replacement = tmp_path / "other.mp4"
    replacement.write_bytes(b"two")
    os.replace(replacement, media)
    assert file_digest(media, tmp_path / "cache") != first


def test_report_and_prune_command(tmp_path):
    cache = StageCache.for_stage(tmp_path / "cache", "faces", stage_params("faces"))
    for vid in ("a", "b"):
        run_cached(_writer, {"video_id": vid, "n": 1}, cache, cache.key(vid, {}), "video_status")
    env = {**os.environ, "WFLWV_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline.runcache", "--params", str(ROOT / "params.yaml")]
    report = subprocess.run([*cmd, "report"], env=env, capture_output=True, text=True, check=True).stdout
    assert "2 entries" in report and "faces" in report
    pruned = subprocess.run([*cmd, "prune", "--older-than", "0"], env=env, capture_output=True, text=True,
                            check=True).stdout
    assert pruned.startswith("removed 2 entries") and "0 entries" in pruned
    bad = subprocess.run([*cmd, "prune", "--older-than", "-1"], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("content", [b"{not json", b""])
def test_a_damaged_entry_counts_as_missing(tmp_path, content):
    cache = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))
    key = cache.key("v", {})
    run_cached(_writer, {"video_id": "v", "n": 1}, cache, key, "video_status")
    (cache.entry(key) / "status.json").write_bytes(content)
    assert cache.lookup(key) is None and not cache.entry(key).exists()  # removed: the stage computes it again
    assert run_cached(_writer, {"video_id": "v", "n": 1}, cache, key, "video_status")["stored"]
    assert json.loads((cache.entry(key) / "status.json").read_text())["video_id"] == "v"


def test_linking_the_same_file_twice_leaves_no_temporary(tmp_path):
    src = tmp_path / "entry" / "clip.mp4"
    src.parent.mkdir()
    src.write_bytes(b"x")
    out = tmp_path / "out"
    link_media([src], out)
    link_media([src], out)  # a rerun that reuses the entry
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]
