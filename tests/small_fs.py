"""Real file-system faults for tests: a small tmpfs that fills up, or turns read-only; a test skips, saying why,
where this machine cannot give it one."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_file_system(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block (needs root and ``mount``; else the test is skipped)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("a small real file system needs root and mount(8) (tmpfs); this process has neither")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its file system has no space left."""
    fd = os.open(folder / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


def make_read_only(path: Path) -> None:
    """Turn the file system mounted at ``path`` read-only (root: remount), else the folder itself (chmod)."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
    else:
        for folder in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            folder.chmod(0o555)
