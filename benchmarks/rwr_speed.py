"""Per-frame inference time: every frame from scratch vs RwR (warm start, 1 iteration + the extra step).

Runs LDEQ on a real moving-face clip (the astronaut under a slow pan), batch 1, one process, after a warm-up.

    python benchmarks/rwr_speed.py --profile paper --frames 12 --threads 2 \
        --out benchmarks/results/rwr_speed_paper_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

import cv2
import numpy as np
import torch


def moving_face(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    from skimage import data

    still = data.astronaut()
    frames, boxes = [], []
    for t in range(n):
        shift = np.array([[1, 0, 2.0 * t], [0, 1, 1.0 * t]])
        frames.append(cv2.warpAffine(still, shift, (512, 512), borderMode=cv2.BORDER_REPLICATE))
        boxes.append([179 + 2.0 * t, 83 + 1.0 * t, 266 + 2.0 * t, 170 + 1.0 * t])
    return frames, np.array(boxes, np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from ldeq.config import get_config
    from ldeq.infer import RwR, predict_video
    from ldeq.model import LDEQ

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_config(args.profile, tol=0.0)  # fixed budgets: early stopping must not decide the comparison
    model = LDEQ(cfg).to(args.device).eval()
    frames, boxes = moving_face(args.frames)
    predict_video(model, frames[:2], boxes[:2])  # warm-up
    scratch = predict_video(model, frames, boxes)
    rwr = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=True, align=True, gamma=0.0))
    result = {
        "profile": args.profile, "solver": cfg.solver, "max_iters": cfg.max_iters, "frames": args.frames,
        "threads": args.threads, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "scratch_ms_per_frame": round(1000 * float(np.median(scratch.seconds)), 2),
        "rwr_ms_per_frame": round(1000 * float(np.median(rwr.seconds[1:])), 2),
        "scratch_calls": float(scratch.calls.mean()), "rwr_calls": float(rwr.calls[1:].mean()),
    }
    result["ratio"] = round(result["rwr_ms_per_frame"] / result["scratch_ms_per_frame"], 3)
    print(json.dumps(result))
    if args.out:
        from pipeline.manifest import write_json

        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
