"""Measure the demo's reference stills and landmarks with the live models, or check the stored file against them.

    python -m pipeline.demo.measure_reference check   # live models vs reference.json, within TOLERANCE_PX
    python -m pipeline.demo.measure_reference write   # re-measure (only when the media or the reference models change)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo.media import Still, StillCut, cut_stills, source_photos
from pipeline.demo.reference import REFERENCE_FILE
from pipeline.faces.detectors import DlibHOGDetector
from pipeline.landmarks.adapters import DlibERT68, LandmarkModel, MediaPipeFaceMesh
from pipeline.landmarks.consensus import consensus
from pipeline.landmarks.schemes import to_wflw98
from pipeline.manifest import atomic_path

__all__ = ["TOLERANCE_PX", "find_stills", "measure", "check"]

#: Largest difference (px) between the stored and a live measurement that ``check`` accepts: float kernels differ
#: between CPUs by far less; a larger gap means the media or a model changed.
TOLERANCE_PX = 0.05
_DECIMALS = 3  # stored precision (px): well below any effect on the demo, and exact to write and read back


def find_stills(min_face: int = 60) -> list[StillCut]:
    """Detect the stills: the astronaut and every face of ``t1.jpg`` at least ``min_face`` px wide (dlib HOG).

    Group-photo faces are cut out with a generous margin so each still holds one main face. Detection runs float
    code, so its result is stored as data (:mod:`pipeline.demo.reference`) rather than recomputed per build.
    """
    detector = DlibHOGDetector(max_side=4096, upsample=1, min_score=0.3)
    photos = source_photos()
    astronaut = photos["astronaut"]
    det = detector.detect(astronaut)
    box = det.boxes[int(np.argmax(det.scores))]
    cuts = [StillCut("astronaut", "astronaut", (0, 0, astronaut.shape[1], astronaut.shape[0]),
                     tuple(float(v) for v in box))]  # type: ignore[arg-type]
    group = photos["t1"]
    det = detector.detect(group)
    order = np.argsort(det.boxes[:, 0])
    for k, i in enumerate(order):
        x1, y1, x2, y2 = det.boxes[i]
        side = max(x2 - x1, y2 - y1)
        if side < min_face:
            continue
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.6 * side
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        right, bottom = int(min(group.shape[1], cx + half)), int(min(group.shape[0], cy + half))
        cuts.append(StillCut(f"t1face{k}", "t1", (left, top, right, bottom),
                             (float(x1 - left), float(y1 - top), float(x2 - left), float(y2 - top))))
    return cuts


def _landmarks(still: Still, models: list[LandmarkModel]) -> np.ndarray:
    """WFLW-98 consensus of the reference models on the clean still (98, 2)."""
    points, masks = [], []
    for model in models:
        native, _ = model.predict(still.rgb, still.box)
        wflw, mask = to_wflw98(native, model.scheme)
        points.append(wflw)
        masks.append(mask)
    centre, _ = consensus(np.stack(points), np.stack(masks), [m.family for m in models])
    return centre


def measure() -> dict[str, Any]:
    """Detect the stills and measure their reference landmarks with the live models (float code)."""
    cuts = find_stills()
    models: list[LandmarkModel] = [DlibERT68(), MediaPipeFaceMesh()]
    stills = cut_stills(cuts)
    entries = []
    for cut, still in zip(cuts, stills, strict=True):
        landmarks = np.round(_landmarks(still, models).astype(np.float64), _DECIMALS)
        entries.append({**asdict(cut), "box": [round(v, _DECIMALS) for v in cut.box],
                        "landmarks": landmarks.tolist()})
    return {"models": [f"{m.name} ({m.version})" for m in models], "scheme": "wflw98", "stills": entries}


def check(path: Path = REFERENCE_FILE) -> float:
    """Largest difference (px) between the stored references and a live measurement; raises if the stills differ."""
    stored = json.loads(path.read_text(encoding="utf-8"))["stills"]
    live = measure()["stills"]
    if [e["name"] for e in stored] != [e["name"] for e in live]:
        raise ValueError(f"{path}: stills differ: stored {[e['name'] for e in stored]}, "
                         f"live {[e['name'] for e in live]}")
    worst = 0.0
    for a, b in zip(stored, live, strict=True):
        worst = max(worst, float(np.abs(np.subtract(a["box"], b["box"])).max()),
                    float(np.nanmax(np.abs(np.subtract(a["landmarks"], b["landmarks"])))))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["check", "write"])
    args = parser.parse_args(argv)
    if args.action == "write":
        with atomic_path(REFERENCE_FILE) as tmp:
            tmp.write_text(json.dumps(measure(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {REFERENCE_FILE}")
        return 0
    worst = check()
    verdict = "ok" if worst <= TOLERANCE_PX else "DIFFERS"
    print(f"{REFERENCE_FILE}: largest difference to a live measurement {worst:.4f} px "
          f"(tolerance {TOLERANCE_PX} px): {verdict}")
    return 0 if worst <= TOLERANCE_PX else 1


if __name__ == "__main__":
    sys.exit(main())
