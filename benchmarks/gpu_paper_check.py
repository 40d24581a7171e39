"""LDEQ paper-configuration checks for a GPU machine, in one prepared run (needs only torch and numpy).

1. One training step at batch 16 (256 input, phantom gradients): median time over timed steps and peak memory.
2. A short WFLW-shaped training run: batch 16 of 256×256 images with 98 landmarks, written as a loss curve. The
   images are synthetic but learnable: each shows 98 Gaussian blobs at a face-like template moved by a random
   similarity transform, and the targets are the blob centres. It exercises the optimisation, not WFLW accuracy.

    python benchmarks/gpu_paper_check.py --device cuda --steps 300 --out $OUT
    python benchmarks/gpu_paper_check.py --device cpu --profile tiny --steps 5 --out /tmp/check   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldeq.config import get_config  # noqa: E402
from ldeq.model import LDEQ  # noqa: E402


def template(n: int = 98) -> torch.Tensor:
    """A fixed face-like layout in [0.25, 0.75]²: an ellipse of points with inner rows (eyes, nose, mouth)."""
    g = torch.Generator().manual_seed(0)
    angles = torch.linspace(0, 2 * math.pi, 34)[:-1]
    contour = torch.stack([0.5 + 0.22 * torch.cos(angles), 0.5 + 0.25 * torch.sin(angles)], dim=1)
    inner = 0.35 + 0.3 * torch.rand(n - len(contour), 2, generator=g)
    return torch.cat([contour, inner])


def batch(size: int, pts: torch.Tensor, res: int, device: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, res, res) with a blob per landmark and targets (B, 98, 2) in [0, 1)."""
    angle = (torch.rand(size, generator=g) - 0.5) * 0.6
    scale = 0.8 + 0.4 * torch.rand(size, generator=g)
    shift = (torch.rand(size, 2, generator=g) - 0.5) * 0.2
    rot = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], 1).view(size, 2, 2)
    targets = ((pts - 0.5) @ rot.transpose(1, 2)) * scale[:, None, None] + 0.5 + shift[:, None]
    targets = targets.to(device)
    grid = (torch.arange(res, device=device) + 0.5) / res
    dx = grid[None, None, :] - targets[..., 0:1]
    dy = grid[None, None, :] - targets[..., 1:2]
    sigma = 1.5 / res * 4
    blobs = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma**2)).amax(dim=1)
    images = (blobs[:, None].expand(-1, 3, -1, -1) - 0.2) / 0.25
    return images, targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300, help="length of the loss-curve run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = get_config(args.profile)
    model = LDEQ(cfg).to(args.device).train()
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pts, g = template(cfg.num_landmarks), torch.Generator().manual_seed(1)
    cuda = args.device.startswith("cuda")

    def step() -> float:
        images, targets = batch(args.batch, pts, cfg.input_size, args.device, g)
        loss = (model(images).landmarks - targets).norm(dim=-1).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        return float(loss.detach())

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.timed_steps):
        started = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    report = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "profile": args.profile, "batch": args.batch, "grad": cfg.grad, "solver": cfg.solver,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds_median": sorted(times)[len(times) // 2],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    print(json.dumps(report), flush=True)
    curve = []
    started = time.perf_counter()
    for i in range(args.steps):
        curve.append((i + 1, step()))
        if (i + 1) % 25 == 0:
            print(f"step {i + 1} loss {curve[-1][1]:.4f} ({time.perf_counter() - started:.0f}s)", flush=True)
    report["curve_steps"], report["curve_seconds"] = args.steps, time.perf_counter() - started
    (args.out / "gpu_paper_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "loss_curve.csv").write_text("step,loss\n" + "".join(f"{s},{v:.6f}\n" for s, v in curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
