"""The demo's reference measurements on its clean stills, stored as data (``reference.json``).

The demo's ground truth carries each still's reference landmarks through a known warp. Those references are measured
by float models (dlib HOG for the face box, dlib ERT-68 + MediaPipe mesh for the landmarks), whose last bits depend on
the CPU's SIMD kernels; recomputing them on every build made the demo — and everything after it — differ between
machines. They are measured once (:mod:`pipeline.demo.measure_reference`) and committed, so every machine builds the
same demo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.demo.media import Still, StillCut, cut_stills

__all__ = ["REFERENCE_FILE", "load"]

REFERENCE_FILE = Path(__file__).with_name("reference.json")


def load(path: Path = REFERENCE_FILE) -> dict[str, tuple[Still, np.ndarray]]:
    """``{still name: (still pixels cut from the source photo with its box, landmarks (98, 2))}``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cuts = [StillCut(e["name"], e["source"], tuple(e["crop"]), tuple(e["box"])) for e in data["stills"]]
    stills = cut_stills(cuts)
    return {s.name: (s, np.asarray(e["landmarks"], np.float64)) for s, e in zip(stills, data["stills"], strict=True)}
