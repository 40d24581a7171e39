"""Peak training memory of one LDEQ step vs the number of solver iterations (phantom gradients vs unrolled).

Each configuration runs in a fresh process. On CPU the peak is the process's resident high-water mark (VmHWM,
reset through /proc/self/clear_refs just before the step) minus the resident size before it, with glibc told to
serve every block over 128 KiB by mmap (``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the resident set instead
of lingering in the heap; on CUDA it is ``torch.cuda.max_memory_allocated`` during the step.

    python benchmarks/train_memory.py --profile paper --batch 2 --iters 2 5 10 20 \
        --out benchmarks/results/train_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def one(profile: str, batch: int, iters: int, grad: str, device: str) -> dict:
    import torch

    from ldeq.config import get_config
    from ldeq.model import LDEQ
    from ldeq.train import landmark_loss

    torch.manual_seed(0)
    cfg = get_config(profile, max_iters=iters, tol=0.0, solver="fpi")
    model = LDEQ(cfg).to(device).train()
    images = torch.randn(batch, 3, cfg.input_size, cfg.input_size, device=device)
    target = torch.rand(batch, cfg.num_landmarks, 2, device=device)
    landmark_loss(model(images, grad=grad, max_iters=1).landmarks, target).backward()  # warm-up allocations
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kib("VmRSS") * 1024
    started = time.perf_counter()
    out = model(images, grad=grad)
    landmark_loss(out.landmarks, target).backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    return {"profile": profile, "batch": batch, "iters": iters, "grad": grad, "device": device,
            "calls": out.info.calls, "peak_mib": round(peak / 2**20, 1),
            "seconds": round(time.perf_counter() - started, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--grads", nargs="+", default=["phantom", "unrolled"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("ITERS", "GRAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.profile, args.batch, int(args.child[0]), args.child[1], args.device)))
        return 0
    rows = []
    for grad in args.grads:
        for iters in args.iters:
            cmd = [sys.executable, __file__, "--profile", args.profile, "--batch", str(args.batch), "--device",
                   args.device, "--child", str(iters), grad]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            result = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise SystemExit(f"{grad} at {iters} iterations failed:\n{result.stderr}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    summary = {}
    for grad in args.grads:
        peaks = {r["iters"]: r["peak_mib"] for r in rows if r["grad"] == grad}
        summary[grad] = {"ratio_max_over_min_iters": round(peaks[max(peaks)] / peaks[min(peaks)], 3)}
    report = {"rows": rows, "summary": summary}
    print(json.dumps(summary))
    if args.out:
        from pipeline.manifest import write_json

        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
