"""Where acquisition keeps unfinished work, how a stage clears what a killed run left behind, and output faults."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline.manifest import OutputError  # one class for every output-side fault

__all__ = ["STAGING", "OutputError", "staging_dir", "remove_stale"]

#: Per-video working folders of the download stage, inside its media folder (same file system: moves are renames).
STAGING = ".staging"

#: The temporary siblings :class:`pipeline.manifest.atomic_path` creates: ``.<name>.<8 random chars><suffix>``.
_ATOMIC_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def staging_dir(media_dir: Path, video_id: str) -> Path:
    """The private working folder of one video: nothing else is ever written or deleted there."""
    return media_dir / STAGING / video_id


def remove_stale(media_dir: Path) -> list[Path]:
    """Delete what an interrupted run left in ``media_dir``: the staging folders and atomic-write temporaries.

    Call it once at the start of a stage, before any worker writes there. Returns what was removed.

    Raises:
        OutputError: something cannot be removed (no permission, or files still appearing: another run on the folder).
    """
    removed: list[Path] = []
    if not media_dir.is_dir():
        return removed
    staging = media_dir / STAGING
    try:
        if staging.is_dir():
            shutil.rmtree(staging)
            removed.append(staging)
        for entry in media_dir.iterdir():
            if entry.is_file() and _ATOMIC_TEMP.match(entry.name):
                entry.unlink()
                removed.append(entry)
    except OSError as err:
        where = err.filename or staging
        raise OutputError(f"{where}: cannot remove what an interrupted run left ({err.strerror or err}); is another "
                          f"run writing to {media_dir}?") from None
    return removed
