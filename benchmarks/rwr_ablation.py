"""RwR ablation on a built demo (or any annotated run): which part of RwR removes the flicker.

Evaluates one trained LDEQ on every annotated video with: every frame from scratch; RwR as in evaluate (warm start
resampled into the current crop, 1 + 1 calls); RwR reusing z*_{t−1} as is (the released code); and RwR with a single
call per frame (no iteration before the extra step). Reports mean video NME (%) and NMF per subset.

    .venv/bin/python benchmarks/rwr_ablation.py --model models/ldeq --out benchmarks/results/rwr_ablation_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ldeq.checkpoint import load_checkpoint  # noqa: E402
from ldeq.infer import RwR, predict_video  # noqa: E402
from ldeq.metrics import nmf, video_nme  # noqa: E402
from pipeline.manifest import boxes_array, points_array, read_table, rows_by_video, write_json  # noqa: E402
from pipeline.video import iter_frames  # noqa: E402

VARIANTS: dict[str, RwR | None] = {
    "none": None,
    "rwr_aligned": RwR(iters=1, frame0_full_solve=True, align=True, gamma=0.0),
    "rwr_as_released": RwR(iters=1, frame0_full_solve=True, align=False, gamma=0.0),
    "rwr_one_call": RwR(iters=0, frame0_full_solve=True, align=True, gamma=0.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/ldeq")
    parser.add_argument("--annotations", default="manifests/annotations.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model)
    clips = {r["video_id"]: r["path"] for r in read_table(args.clips, "clips").to_pylist()}
    scores: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for vid, rows in rows_by_video(read_table(args.annotations, "annotations")).items():
        subset = rows.column("subset")[0].as_py()
        gt, boxes = points_array(rows.column("landmarks")), boxes_array(rows)
        frames = [f.rgb for f in iter_frames(clips[vid], 0, len(boxes))]
        for name, rwr in VARIANTS.items():
            pred = predict_video(model, frames, boxes, rwr).points
            scores.setdefault(subset, {}).setdefault(name, []).append((video_nme(pred, gt), nmf(pred, gt)))
        print(vid, subset, {n: tuple(round(v, 1) for v in s[subset][n][-1]) for s in [scores] for n in VARIANTS},
              flush=True)
    result = {"model": str(args.model), "heatmap_reg": model.cfg.heatmap_reg, "subsets": {}}
    for subset, by_variant in scores.items():
        means = {n: np.mean(v, axis=0) for n, v in by_variant.items()}
        result["subsets"][subset] = {n: {"nme": round(float(m[0]), 3), "nmf": round(float(m[1]), 1),
                                         "nmf_vs_none": round(float(m[1] / means["none"][1]), 3),
                                         "n_videos": len(by_variant[n])} for n, m in means.items()}
    print(json.dumps(result["subsets"], indent=1))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
