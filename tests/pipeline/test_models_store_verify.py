"""models_store._verify remembers verified files in verified.json; several processes write it at once."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

from pipeline import models_store
from pipeline.models_store import ModelFile


def _hammer(path: str, spec: ModelFile, rounds: int) -> None:
    for i in range(rounds):
        os.utime(path, ns=(10**9 * (i + 1), 10**9 * (i + 1)))  # a new mtime: the stamp changes, so it is rewritten
        models_store._verify(Path(path), spec)


def test_concurrent_verifications_never_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("WFLWV_MODEL_CACHE", str(tmp_path / "cache"))
    jobs = []
    for k in range(4):
        data = os.urandom(1000 + k)
        path = tmp_path / f"model{k}.bin"
        path.write_bytes(data)
        spec = ModelFile(f"m{k}", "package", "none", "none", hashlib.sha256(data).hexdigest(), len(data), "test")
        jobs.append(multiprocessing.get_context("fork").Process(target=_hammer, args=(str(path), spec, 40)))
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert [job.exitcode for job in jobs] == [0, 0, 0, 0]  # a shared fixed temp name makes some os.replace fail
    marker = tmp_path / "cache" / "verified.json"
    assert isinstance(json.loads(marker.read_text()), dict)
    assert sorted(p.name for p in marker.parent.iterdir()) == ["verified.json"]  # no temporaries left
