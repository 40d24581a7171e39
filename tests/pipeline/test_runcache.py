"""The per-video run cache: keys from code, params, inputs and the environment that computes; only facts stored;
whole entries (pieces checked, fsynced); faults of the run end the stage; locks held by live attempts; the memo."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_fs import fill, make_read_only, small_file_system

from pipeline.imports import import_closure
from pipeline.manifest import rows_table, write_rows
from pipeline.models_store import ModelUnavailable
from pipeline.params import stage_params
from pipeline.runcache import (
    CacheError,
    StageCache,
    code_digest,
    environment,
    failure_status,
    file_digest,
    link_media,
    memo_location,
    run_cached,
    run_job,
    table_digest,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _frames(video_id: str, n: int) -> list[dict]:
    return [{"stage": "faces", "video_id": video_id, "status": "ok", "n_frames": i} for i in range(n)]


def _writer(item: dict, work_dir: Path, **_: object) -> dict:
    """A task that writes a media file and per-frame rows (video_status rows stand in for frames)."""
    (work_dir / f"{item['video_id']}.bin").write_bytes(item["video_id"].encode() * 3)
    return {"status": {"video_id": item["video_id"], "status": item.get("status", "ok"), "error": None,
                       "path": str(work_dir / f"{item['video_id']}.bin")},
            "rows": _frames(item["video_id"], item["n"])}


def _rows_only(item: dict, work_dir: Path, **_: object) -> dict:
    return {"status": {"video_id": item["video_id"], "status": "ok", "error": None},
            "rows": _frames(item["video_id"], item["n"])}


def trim_cache(root: Path) -> StageCache:
    return StageCache.for_stage(root, "trim", stage_params("trim"))


def test_table_digest_ignores_chunking_and_metadata_not_content():
    rows = rows_table(_frames("a", 5), "video_status")
    chunked = pa.concat_tables([rows.slice(0, 2), rows.slice(2)])
    assert table_digest(rows) == table_digest(chunked) == table_digest(rows.replace_schema_metadata({"x": "y"}))
    assert table_digest(rows) != table_digest(rows.slice(1))


def test_code_digest_follows_the_stage_closure_and_its_data_files(tmp_path):
    import shutil

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


# --- what the key names --------------------------------------------------------------------------------------------

@functools.cache
def _declared() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _distributions_of(name: str) -> set[str]:
    """The installed distributions that provide top-level module ``name``, found independently of the code under
    test: the top-level names distributions declare, else the distribution whose RECORD lists the file that Python
    imports for ``name``."""
    import importlib.util
    from importlib.metadata import distributions

    declared = _declared().get(name)
    if declared:
        return set(declared)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return set()
    origin = Path(spec.origin)
    found = set()
    for dist in distributions():
        base = Path(str(dist.locate_file("")))
        if origin.is_relative_to(base):
            rel = origin.relative_to(base).as_posix()
            if f"\n{rel}," in "\n" + (dist.read_text("RECORD") or ""):
                found.add(dist.metadata["Name"])
    return found


def _third_party_imports(module: str) -> set[str]:
    import ast

    names = set()
    for rel in import_closure(module, ROOT):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in ("pipeline", "stages", "ldeq", "__future__")
            and n not in sys.stdlib_module_names}


@pytest.mark.parametrize("stage", ["trim", "faces", "label"])
def test_every_third_party_package_a_stage_imports_is_in_its_key(stage):
    """A package of the stage's closure (lazy imports too: insightface, onnx) missing from the key would let another
    version's results be served; OpenCV counts under whatever distribution installed cv2."""
    env = environment(stage, stage_params(stage))
    imported = _third_party_imports(f"stages.{stage}")
    assert {"numpy", "cv2", "av", "pyarrow"} <= imported  # the check really sees the stage's imports
    for name in sorted(imported):
        dists = _distributions_of(name)
        if dists:
            assert dists <= set(env["packages"]), f"{stage}: {name} ({dists}) is not in the key"
        else:
            assert f"{name} (not installed)" in env["packages"], name
    assert env["python"].endswith(sys.version.split()[0])
    assert set(env["ffmpeg"]) >= {"libavcodec", "libavformat"}  # PyAV's FFmpeg, not only PyAV's version
    assert env["kernel_pins"]["level"] and env["cpu_level"]


def test_the_faces_key_names_the_model_files_and_the_detector_the_chain_resolved_to(tmp_path):
    """With the model files missing, the chain falls back (to dlib's HOG): that computes under another key, so it is
    never served to a run where RetinaFace loads."""
    whole = StageCache.for_stage(tmp_path, "faces", stage_params("faces"))
    facts = whole.environment["facts"]
    assert facts["pipeline.faces.process"]["detector"] == "retinaface+rot"
    assert facts["pipeline.models_store"]["files"]["retinaface_mnet_py"] is not None
    (tmp_path / "empty").mkdir()
    code = ("import json, sys; from pathlib import Path\nimport stages\n"
            "from pipeline.params import stage_params\nfrom pipeline.runcache import StageCache\n"
            "c = StageCache.for_stage(Path(sys.argv[1]), 'faces', stage_params('faces'))\n"
            "print(json.dumps({'fingerprint': c.fingerprint, 'facts': c.environment['facts']}))")
    env = {**ENV, "WFLWV_MODEL_CACHE": str(tmp_path / "empty"), "WFLWV_MODEL_MIRROR": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)
    missing = json.loads(done.stdout.strip().splitlines()[-1])
    assert missing["facts"]["pipeline.faces.process"]["detector"] == "dlib_hog+rot"
    assert missing["facts"]["pipeline.models_store"]["files"]["retinaface_mnet_py"] is None
    assert missing["fingerprint"] != whole.fingerprint


def test_the_model_kernels_are_in_the_key_of_the_stages_that_run_models(monkeypatch, tmp_path):
    """models.determinism (or $WFLWV_DETERMINISM) picks LiteRT's reference kernels or XNNPACK: other bits."""
    keys = {}
    for mode in ("exact", "fast"):
        monkeypatch.setenv("WFLWV_DETERMINISM", mode)
        keys[mode] = StageCache.for_stage(tmp_path, "label", stage_params("label")).fingerprint
        assert environment("label", stage_params("label"))["facts"]["pipeline.models_store"]["determinism"] == mode
    assert keys["exact"] != keys["fast"]
    assert "pipeline.models_store" not in environment("trim", stage_params("trim"))["facts"]  # trim runs no model


# --- facts and faults ----------------------------------------------------------------------------------------------

def test_failures_are_facts_or_faults_by_what_the_error_is(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    errors = {}
    for name, path in (("garbage", garbage), ("missing", tmp_path / "gone.mp4")):
        try:
            av.open(str(path))
        except av.error.FFmpegError as err:
            errors[name] = err
    assert isinstance(errors["missing"], OSError)  # PyAV's errno errors are OSErrors too
    assert failure_status(errors["garbage"], garbage)["status"] == "decode_error"  # the media: a fact
    assert failure_status(errors["missing"], garbage)["status"] == "error"  # the file system: this run's
    assert failure_status(OSError(24, "Too many open files"), garbage)["status"] == "error"
    assert failure_status(MemoryError(), garbage)["status"] == "error"
    model = failure_status(ModelUnavailable("model 'x': file y does not exist"), garbage)
    assert model == {"status": "model_error", "error": f"{garbage}: ModelUnavailable: model 'x': file y does not exist"}
    assert failure_status(ValueError("window past the end"), garbage, invalid="bad_window")["status"] == "bad_window"


@pytest.mark.parametrize(("status", "stored"), [("ok", True), ("no_face", True), ("decode_error", True),
                                                 ("model_error", False), ("error", False)])
def test_only_facts_are_stored(tmp_path, status, stored):
    cache = trim_cache(tmp_path)
    key = cache.key("v", {"status": status})
    result = run_cached(_writer, {"video_id": "v", "n": 1, "status": status}, cache, key, "video_status")
    assert result["stored"] is stored and result["status"]["status"] == status
    assert (cache.lookup(key) is not None) is stored


# --- whole entries -------------------------------------------------------------------------------------------------

def test_entries_are_stored_whole_and_reused(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    key = cache.key("v1", {"n": 3})
    assert cache.lookup(key) is None
    result = run_cached(_writer, {"video_id": "v1", "n": 3}, cache, key, "video_status")
    assert result["stored"] and result["status"]["path"] == "v1.bin"  # media named inside the entry
    hit = cache.lookup(key)
    assert hit is not None and hit.status["video_id"] == "v1"
    assert [p.name for p in hit.media] == ["v1.bin"]
    assert pq.read_table(hit.frames).num_rows == 3
    index = json.loads((cache.entry(key) / "entry.json").read_text())
    assert {p["name"]: p["size"] for p in index["pieces"]} == {"frames.parquet": hit.frames.stat().st_size,
                                                               "media/v1.bin": 6}
    assert next(p for p in index["pieces"] if p["name"] == "media/v1.bin")["sha256"] == \
        hashlib.sha256(b"v1v1v1").hexdigest()
    out = tmp_path / "out"
    link_media(hit.media, out)
    assert (out / "v1.bin").read_bytes() == b"v1v1v1"
    assert not any((cache.folder / ".tmp").iterdir())  # nothing half-written left behind


def _damage_frames_gone(entry: Path) -> None:
    (entry / "frames.parquet").unlink()


def _damage_media_same_size(entry: Path) -> None:
    time.sleep(0.02)  # a later ctime: the memo must see the rewrite
    with open(entry / "media" / "v.bin", "r+b") as fh:
        fh.write(b"XX")


def _damage_index(entry: Path) -> None:
    (entry / "entry.json").write_bytes(b"{not json")


def _damage_index_empty(entry: Path) -> None:
    (entry / "entry.json").write_bytes(b"")


@pytest.mark.parametrize("damage", [_damage_frames_gone, _damage_media_same_size, _damage_index,
                                    _damage_index_empty])
def test_an_entry_with_a_missing_or_changed_piece_is_discarded_and_computed_again(tmp_path, damage, caplog):
    cache = trim_cache(tmp_path)
    key = cache.key("v", {})
    run_cached(_writer, {"video_id": "v", "n": 2}, cache, key, "video_status")
    assert cache.lookup(key) is not None  # the memo knows every piece now
    damage(cache.entry(key))
    with caplog.at_level(logging.WARNING, logger="pipeline.runcache"):
        assert cache.lookup(key) is None
    assert not cache.entry(key).exists()
    assert "discarded" in caplog.text and cache.entry(key).name in caplog.text
    assert run_cached(_writer, {"video_id": "v", "n": 2}, cache, key, "video_status")["stored"]
    hit = cache.lookup(key)
    assert hit is not None and pq.read_table(hit.frames).num_rows == 2


def test_a_lookup_that_cannot_read_for_a_reason_of_the_run_fails_and_keeps_the_entry(tmp_path):
    """EMFILE (a real one: this process's descriptors used up) is not a damaged entry."""
    cache = trim_cache(tmp_path)
    key = cache.key("v", {})
    run_cached(_writer, {"video_id": "v", "n": 1}, cache, key, "video_status")
    script = ("import os, resource, sys\nfrom pathlib import Path\n"
              "from pipeline.runcache import CacheError, StageCache\n"
              "cache = StageCache(Path(sys.argv[1]), 'trim', 'unused')\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
              "held = []\n"
              "try:\n    while True:\n        held.append(os.open(os.devnull, os.O_RDONLY))\n"
              "except OSError:\n    pass\n"
              "try:\n    cache.lookup(sys.argv[2]); outcome = 'looked up'\n"
              "except CacheError as err:\n    outcome = f'CacheError: {err}'\n"
              "for fd in held:\n    os.close(fd)\n"
              "print(outcome)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), key], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().startswith("CacheError: ") and "Too many open files" in done.stdout, done.stdout
    assert str(cache.entry(key)) in done.stdout
    assert cache.lookup(key) is not None  # still whole, still there


def test_a_full_disk_while_storing_is_a_cache_error_naming_the_path(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    key = cache.key("v", {})
    with small_file_system(cache.folder, "64k"):
        fill(cache.folder)
        with pytest.raises(CacheError, match="No space left on device") as raised:
            run_cached(_rows_only, {"video_id": "v", "n": 2000}, cache, key, "video_status")
        assert str(cache.folder) in str(raised.value)
        (cache.folder / "filler").unlink()
        assert cache.lookup(key) is None and not list((cache.folder / ".tmp").iterdir())


def test_a_cache_that_turns_read_only_while_storing_is_a_cache_error(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    key = cache.key("v", {})
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:  # root writes through permissions: a real read-only file system instead
            stack.enter_context(small_file_system(cache.folder, "1m"))
        cache.folder.mkdir(parents=True, exist_ok=True)

        def turn_read_only(item: dict, work_dir: Path, **_: object) -> dict:
            make_read_only(cache.folder)
            return _rows_only(item, work_dir)

        with pytest.raises(CacheError, match="Read-only file system|Permission denied") as raised:
            run_cached(turn_read_only, {"video_id": "v", "n": 2}, cache, key, "video_status")
        assert str(cache.folder) in str(raised.value)
        assert cache.lookup(key) is None
        if os.geteuid() != 0:
            for folder in [cache.folder, *cache.folder.rglob("*")]:
                if folder.is_dir():
                    folder.chmod(0o755)


# --- attempts ------------------------------------------------------------------------------------------------------

def test_a_killed_attempt_leaves_no_entry_and_is_counted(tmp_path):
    """A process killed mid-task (kill -9) leaves only its temporary folder; the next attempt says it is a retry."""
    cache = trim_cache(tmp_path)
    key = cache.key("v1", {})
    script = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pathlib import Path\n"
              "from pipeline.runcache import StageCache, run_cached\n"
              f"cache = StageCache(Path({str(tmp_path)!r}), 'trim', 'unused')\n"
              "def die(item, work_dir):\n"
              "    (work_dir / 'half.bin').write_bytes(b'x')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"run_cached(die, {{}}, cache, {key!r}, 'video_status')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=False)
    assert proc.returncode == -9
    left = sorted(p.name for p in (cache.folder / ".tmp").iterdir())
    assert cache.lookup(key) is None and len(left) == 2 and left[1] == left[0] + ".lock"  # its folder and lock
    result = run_job({"video_id": "v1", "item": {"video_id": "v1", "n": 2}, "key": key}, _writer, cache,
                     "video_status")
    assert result["attempt"] == 2 and cache.lookup(key) is not None
    assert not list((cache.folder / ".tmp").iterdir())


def _dead_pid() -> int:
    for pid in range(int(Path("/proc/sys/kernel/pid_max").read_text()) - 1, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid")


def test_a_live_attempt_of_another_container_is_never_cleared(tmp_path):
    """Another container on a host of the same name: its pid means nothing here (it looks dead). Its attempt holds
    its lock, so a cleaner here leaves it alone, and it stores its entry."""
    cache = trim_cache(tmp_path)
    key = cache.key("v", {})
    go = tmp_path / "go"
    script = ("import os, sys, time\nfrom pathlib import Path\n"
              "from pipeline.runcache import StageCache, run_cached\n"
              f"os.getpid = lambda: {_dead_pid()}  # the pid another PID namespace shows\n"
              "cache = StageCache(Path(sys.argv[1]), 'trim', 'unused')\n"
              "def slow(item, work_dir):\n"
              "    (work_dir / 'clip.bin').write_bytes(b'clip')\n"
              "    while not Path(sys.argv[3]).exists():\n        time.sleep(0.05)\n"
              "    return {'status': {'video_id': 'v', 'status': 'ok', 'error': None}, 'rows': []}\n"
              "print(run_cached(slow, {}, cache, sys.argv[2], 'video_status')['stored'])\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), key, str(go)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((cache.folder / ".tmp").glob("*/media/clip.bin")):
            assert proc.poll() is None and time.monotonic() < deadline, "the attempt did not start"
            time.sleep(0.05)
        assert cache.clear_abandoned() == 0 and cache.clear_abandoned(key) == 0
        assert list((cache.folder / ".tmp").glob("*/media/clip.bin"))  # still there
    finally:
        go.write_text("")
        out, _ = proc.communicate(timeout=60)
    assert out.strip() == "True" and cache.lookup(key) is not None


# --- the file-hash memo --------------------------------------------------------------------------------------------

def test_file_digest_sees_a_replaced_file_and_a_same_size_rewrite_with_its_mtime_restored(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"one")
    first = file_digest(media, tmp_path / "cache")
    assert file_digest(media, tmp_path / "cache") == first
    replacement = tmp_path / "other.mp4"
    replacement.write_bytes(b"two")
    os.replace(replacement, media)
    assert file_digest(media, tmp_path / "cache") == hashlib.sha256(b"two").hexdigest()
    before = media.stat()
    time.sleep(0.02)  # the kernel's clock must tick between the two writes
    with open(media, "r+b") as fh:
        fh.write(b"six")
    os.utime(media, ns=(before.st_atime_ns, before.st_mtime_ns))  # what `touch -r` or a careless copy does
    after = media.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert file_digest(media, tmp_path / "cache") == hashlib.sha256(b"six").hexdigest()


def test_the_memo_serves_several_threads_and_processes_in_wal_mode(tmp_path):
    files = []
    for i in range(8):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]) * 1000)
    cache = tmp_path / "cache"
    file_digest(files[0], cache)  # this thread's connection first
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = file_digest(files[i], cache)
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {i: hashlib.sha256(bytes([i]) * 1000).hexdigest() for i in range(8)}
    script = ("import sys\nfrom pathlib import Path\nfrom pipeline.runcache import file_digest\n"
              "print([file_digest(Path(p), Path(sys.argv[1])) for p in sys.argv[2:]] == sys.argv[2:] or 'ok')")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache), *map(str, files)], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with sqlite3.connect(memo_location(cache)) as db:
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_the_memo_of_a_cache_on_nfs_lives_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    mounts = "/dev/sda1 / ext4 rw 0 0\nfiler:/export/wflwv /mnt/shared nfs4 rw,relatime 0 0\n"
    assert memo_location(Path("/mnt/shared/runs"), mounts).parent == tmp_path / "home-cache" / "wflwv"
    assert memo_location(Path("/mnt/other/runs"), mounts) == Path("/mnt/other/runs/file-digests.sqlite")
    assert memo_location(tmp_path / "cache") == tmp_path / "cache" / "file-digests.sqlite"  # this real file system


def test_linking_the_same_file_twice_leaves_no_temporary(tmp_path):
    src = tmp_path / "entry" / "clip.mp4"
    src.parent.mkdir()
    src.write_bytes(b"x")
    out = tmp_path / "out"
    link_media([src], out)
    link_media([src], out)  # a rerun that reuses the entry
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]


# --- report and prune ----------------------------------------------------------------------------------------------

def _prune(root: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline.runcache prune ...`` run from ``project`` (its main, in this process: stdout, stderr and
    exit status as the command gives them)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from pipeline.runcache import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("WFLWV_CACHE")
    os.environ["WFLWV_CACHE"] = str(root)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--params", str(ROOT / "params.yaml"), "prune", "--project", str(project), *args])
    finally:
        if old is None:
            del os.environ["WFLWV_CACHE"]
        else:
            os.environ["WFLWV_CACHE"] = old
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _stage_run(cache: StageCache, project: Path, videos: list[str], out: str) -> Path:
    """What a stage run leaves: entries for ``videos``, a manifest of them, and the record of which entries built it
    (the calls run_cached_stage makes, without dask)."""
    keys = []
    for vid in videos:
        key = cache.key(vid, {})
        if cache.lookup(key) is None:
            run_cached(_writer, {"video_id": vid, "n": 1}, cache, key, "video_status")
        keys.append(key)
    manifest = project / out
    write_rows([{"stage": "trim", "video_id": v, "status": "ok"} for v in videos], "video_status", manifest)
    cwd = Path.cwd()
    os.chdir(project)
    try:
        cache.record_outputs([manifest], keys)
    finally:
        os.chdir(cwd)
    return manifest


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324


def test_prune_keeps_what_the_current_outputs_and_dvc_lock_were_built_from(tmp_path):
    project, root = tmp_path / "project", tmp_path / "cache"
    (project / "manifests").mkdir(parents=True)
    cache = trim_cache(root)
    committed = _stage_run(cache, project, ["a", "b"], "manifests/status.parquet")
    out = {"path": "manifests/status.parquet", "hash": "md5", "md5": _md5(committed),
           "size": committed.stat().st_size}
    lock = {"schema": "2.0", "stages": {"trim": {"cmd": "python -m stages.trim", "outs": [out]}}}
    (project / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML: dvc.lock as `dvc commit` left it
    _stage_run(cache, project, ["a", "c"], "manifests/status.parquet")  # a later run, not committed yet
    stray = cache.key("d", {})
    run_cached(_writer, {"video_id": "d", "n": 1}, cache, stray, "video_status")

    dry = _prune(root, project, "--older-than", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove trim/{stray[:2]}/{stray}" in dry.stdout and " MB" in dry.stdout
    assert "would remove 1 entries" in dry.stdout and "kept 3 that current outputs were built from" in dry.stdout
    assert cache.entry(stray).is_dir()  # a dry run removes nothing

    done = _prune(root, project, "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert "removed 1 entries" in done.stdout
    assert not cache.entry(stray).exists()
    assert all(cache.lookup(cache.key(v, {})) is not None for v in "abc")  # b: dvc.lock; a, c: the workspace
    (project / "dvc.lock").unlink()
    assert _prune(root, project, "--older-than", "0").returncode == 0
    assert cache.lookup(cache.key("b", {})) is None and cache.lookup(cache.key("c", {})) is not None


def test_prune_waits_for_no_running_stage(tmp_path):
    from pipeline.runcache import cache_lock

    cache = trim_cache(tmp_path / "cache")
    run_cached(_writer, {"video_id": "a", "n": 1}, cache, cache.key("a", {}), "video_status")
    with cache_lock(cache.root):  # what a running stage holds
        busy = _prune(cache.root, tmp_path, "--older-than", "0")
    assert busy.returncode == 1 and busy.stderr.count("\n") == 1 and "in use by a running stage" in busy.stderr
    assert cache.lookup(cache.key("a", {})) is not None
    bad = _prune(cache.root, tmp_path, "--older-than", "-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_prune_by_size_goes_least_recently_used_first(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    now = time.time()
    for age, vid in enumerate("abcd"):  # a used last, d longest ago
        key = cache.key(vid, {})
        run_cached(_writer, {"video_id": vid, "n": 400}, cache, key, "video_status")
        os.utime(cache.entry(key), (now - age * 3600, now - age * 3600))
    size = sum(f.stat().st_size for f in cache.entry(cache.key("a", {})).rglob("*") if f.is_file())
    done = _prune(cache.root, tmp_path, "--max-size", f"{int(2.5 * size)}B")
    assert done.returncode == 0, done.stderr
    assert [cache.lookup(cache.key(v, {})) is not None for v in "abcd"] == [True, True, False, False]


def _store_download(store: Path, video_id: str, version: str, url: str, media: bytes, source: dict) -> Path:
    """A stored download version as pipeline.acquire.download leaves it: ``<id>/<version>/<id>.mp4`` + its record."""
    slot = store / video_id / version
    slot.mkdir(parents=True)
    (slot / f"{video_id}.mp4").write_bytes(media)
    record = {"video_id": video_id, "url": url, "status": "ok", "path": f"{video_id}.mp4", "bytes": len(media),
              "sha256": hashlib.sha256(media).hexdigest(), "format": "bv*", "source": source}
    (slot / f"{video_id}.json").write_text(json.dumps(record))
    return slot


def test_prune_keeps_current_downloads_and_unreachable_ones_unless_named(tmp_path):
    project, root = tmp_path / "project", tmp_path / "cache"
    (project / "data").mkdir(parents=True)
    store = root / "downloads"
    local = project / "data" / "local.mp4"
    local.write_bytes(b"local video")
    current = _store_download(store, "yt1", "v1", "https://www.youtube.com/watch?v=yt1", b"current",
                              {"kind": "extractor", "id": "yt1"})
    gone = _store_download(store, "yt2", "v1", "https://www.youtube.com/watch?v=yt2", b"left youtube",
                           {"kind": "extractor", "id": "yt2"})
    refetchable = _store_download(store, "loc", "v1", "file:data/local.mp4", b"local video",
                                  {"kind": "file", "bytes": 11, "sha256": hashlib.sha256(b"local video").hexdigest()})
    write_rows([{"video_id": "yt1", "url": "https://www.youtube.com/watch?v=yt1", "status": "ok",
                 "sha256": hashlib.sha256(b"current").hexdigest(), "path": "data/downloads/yt1.mp4"},
                {"video_id": "yt2", "url": "https://www.youtube.com/watch?v=yt2", "status": "unavailable",
                 "error": "Video unavailable"}],
               "downloads", project / "manifests" / "downloads.parquet")
    done = _prune(root, project, "--older-than", "0", "--stage", "downloads")
    assert done.returncode == 0, done.stderr
    assert current.is_dir() and gone.is_dir() and not refetchable.exists()
    assert "1 stored downloads whose source is not reachable" in done.stdout
    assert _prune(root, project, "--older-than", "0", "yt2").returncode == 0  # named: it goes
    assert not gone.exists() and current.is_dir()
    assert _prune(root, project, "--older-than", "0", "--include-unreachable").returncode == 0
    assert current.is_dir()  # current stays whatever is asked


def test_a_prune_killed_midway_leaves_only_whole_entries(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    keys = [cache.key(f"v{i}", {}) for i in range(80)]
    for i, key in enumerate(keys):
        run_cached(_writer, {"video_id": f"v{i}", "n": 1}, cache, key, "video_status")
    env = {**ENV, "WFLWV_CACHE": str(cache.root)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.runcache", "--params", str(ROOT / "params.yaml"),
                             "prune", "--older-than", "0"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (cache.root / ".trash").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)  # the first entry is on its way out
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -9, stderr  # killed in the middle, not after it finished
    for key in keys:  # every entry is there whole or not at all
        if cache.entry(key).exists():
            assert cache.lookup(key) is not None, key
    done = _prune(cache.root, tmp_path, "--older-than", "0")
    assert done.returncode == 0 and not any(cache.entry(k).exists() for k in keys)
    assert not list((cache.root / ".trash").iterdir())


def test_prune_forgets_memo_rows_of_files_that_are_gone_and_keeps_the_others(tmp_path):
    cache = trim_cache(tmp_path / "cache")
    kept, gone = tmp_path / "kept.mp4", tmp_path / "gone.mp4"
    kept.write_bytes(b"kept")
    gone.write_bytes(b"gone")
    file_digest(kept, cache.root)
    file_digest(gone, cache.root)
    gone.unlink()
    assert _prune(cache.root, tmp_path, "--older-than", "0").returncode == 0
    with sqlite3.connect(memo_location(cache.root)) as db:
        paths = {row[0] for row in db.execute("select path from digests")}
    assert str(kept.resolve()) in paths and str(gone.resolve()) not in paths
