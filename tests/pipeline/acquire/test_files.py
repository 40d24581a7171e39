"""pipeline.acquire.files: clearing what an interrupted run left, and saying so in one line when it cannot."""

from __future__ import annotations

import pytest

from pipeline.acquire.files import STAGING, OutputError, remove_stale, staging_dir


def test_leftovers_are_removed_and_finished_files_kept(tmp_path):
    part = staging_dir(tmp_path, "v1") / "media.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"partial")
    (tmp_path / ".v2.mp4.abcd1234.mp4").write_bytes(b"temp")  # an atomic write that never finished
    (tmp_path / "v3.mp4").write_bytes(b"done")
    assert sorted(p.name for p in remove_stale(tmp_path)) == sorted([STAGING, ".v2.mp4.abcd1234.mp4"])
    assert [p.name for p in tmp_path.iterdir()] == ["v3.mp4"]


def test_what_cannot_be_removed_stops_the_stage_in_one_line(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "v1").mkdir(parents=True)
    media = tmp_path / "downloads"
    media.mkdir()
    (media / STAGING).symlink_to(elsewhere)  # rmtree refuses links: as good as a folder that cannot be emptied
    with pytest.raises(OutputError, match=rf"^{media / STAGING}: cannot remove what an interrupted run left") as err:
        remove_stale(media)
    assert "\n" not in str(err.value) and (elsewhere / "v1").is_dir()
