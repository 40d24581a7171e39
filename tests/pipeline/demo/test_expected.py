"""pipeline.demo.expected: a built demo against its committed hash list names the first file that differs."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from pipeline.demo.expected import first_difference, read, write

ROOT = Path(__file__).resolve().parents[3]


def folder_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "demo"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def test_a_recorded_folder_matches_and_each_kind_of_change_is_named(tmp_path):
    folder = folder_with(tmp_path, {"raw/a.mp4": b"a", "raw/b.mp4": b"b", "truth.parquet": b"t"})
    listing = tmp_path / "expected_md5.txt"
    assert write(folder, listing, "header") == 3
    assert read(listing)["raw/b.mp4"] == hashlib.md5(b"b").hexdigest()
    assert first_difference(folder, listing) is None
    (folder / "raw/b.mp4").write_bytes(b"other")
    (folder / "truth.parquet").write_bytes(b"other")
    assert first_difference(folder, listing) == (
        f"{folder / 'raw/b.mp4'}: md5 {hashlib.md5(b'other').hexdigest()}, {listing} expects "
        f"{hashlib.md5(b'b').hexdigest()}")
    (folder / "raw/a.mp4").unlink()
    assert first_difference(folder, listing) == f"{folder / 'raw/a.mp4'}: missing (listed in {listing})"
    (folder / "raw/0.mp4").write_bytes(b"new")
    assert first_difference(folder, listing) == f"{folder / 'raw/0.mp4'}: not listed in {listing}"
    (folder / "raw/a.mp4").write_bytes(b"a")
    assert first_difference(folder, listing, ignore={"raw/0.mp4", "raw/b.mp4", "truth.parquet"}) is None


def test_the_cli_check_is_one_line_and_its_exit_status_says_which(tmp_path):
    folder = folder_with(tmp_path, {"raw/a.mp4": b"a"})
    listing = tmp_path / "list.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.demo.expected", "check", str(folder), "--list",
                               str(listing), *extra], cwd=ROOT, env=env, capture_output=True, text=True)

    assert check().stderr.strip() == f"error: [Errno 2] No such file or directory: '{listing}'"
    listing.write_text("# a comment\nnot-an-md5  raw/a.mp4\n")
    result = check()
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: {listing}:2: expected '<md5>  <path>', got 'not-an-md5  raw/a.mp4'")
    listing.write_text(f"{hashlib.md5(b'x').hexdigest()}  raw/a.mp4\n")
    result = check()
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"differs: {folder / 'raw/a.mp4'}: md5 {hashlib.md5(b'a').hexdigest()}, {listing} expects "
        f"{hashlib.md5(b'x').hexdigest()}"]
    listing.write_text(f"{hashlib.md5(b'a').hexdigest()}  raw/a.mp4\n")
    assert check().returncode == 0
