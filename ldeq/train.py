"""Training LDEQ on landmark crops: augmentation, loss, and resumable training (checkpoints: :mod:`ldeq.checkpoint`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ldeq.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, LAYOUT, read_training_state, save_training_state
from ldeq.config import LDEQConfig
from ldeq.crop import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ldeq.geometry import apply_affine
from ldeq.model import LDEQ
from ldeq.wflw import FLIP_PERMUTATION

__all__ = ["Augment", "LandmarkCrops", "epoch_seed", "landmark_loss", "heatmap_loss", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augment:
    """Augmentation probabilities and ranges (HIH-style recipe, scaled to the crop size)."""

    translate: float = 30 / 256  # fraction of the crop side
    p_translate: float = 0.5
    p_flip: float = 0.5
    rotate_deg: float = 30.0
    p_rotate: float = 0.5
    blur_radius: float = 5.0
    p_blur: float = 0.3
    occlusion: float = 0.4  # max occluder side as a fraction of the crop
    p_occlusion: float = 0.5


def _augment(img: np.ndarray, pts: np.ndarray, aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    if rng.random() < aug.p_flip:
        img = img[:, ::-1].copy()
        pts = pts[FLIP_PERMUTATION].copy()
        pts[:, 0] = size - 1 - pts[:, 0]
    angle = rng.uniform(-aug.rotate_deg, aug.rotate_deg) if rng.random() < aug.p_rotate else 0.0
    shift = rng.uniform(-aug.translate, aug.translate, 2) * size if rng.random() < aug.p_translate else np.zeros(2)
    if angle or shift.any():
        affine = np.asarray(cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0), np.float64)
        affine[:, 2] += shift
        img = cv2.warpAffine(img, affine, (size, size), borderMode=cv2.BORDER_CONSTANT)
        pts = apply_affine(pts, affine)
    if rng.random() < aug.p_blur:
        sigma = rng.uniform(0, aug.blur_radius) * size / 256
        if sigma > 0.1:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < aug.p_occlusion:
        w, h = (rng.uniform(0.05, aug.occlusion, 2) * size).astype(int)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        img = img.copy()
        img[y : y + h, x : x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img, pts


class LandmarkCrops(Dataset):
    """Square crops (N, S, S, 3) uint8 with landmarks in crop pixels (N, L, 2); targets are normalised to [0, 1).

    Images are normalised with ``mean``/``std`` (the model config's, ImageNet by default).
    """

    def __init__(self, images: np.ndarray, points: np.ndarray, augment: Augment | None = None, seed: int = 0,
                 mean: Sequence[float] | np.ndarray = IMAGENET_MEAN,
                 std: Sequence[float] | np.ndarray = IMAGENET_STD) -> None:
        if len(images) != len(points):
            raise ValueError(f"{len(images)} images but {len(points)} landmark sets")
        self.images, self.points, self.augment, self.seed = images, points.astype(np.float32), augment, seed
        self.mean, self.std = mean, std
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, pts = self.images[i], self.points[i]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            img, pts = _augment(img, pts, self.augment, rng)
        size = img.shape[0]
        image = normalize_image(img, self.mean, self.std)
        return torch.from_numpy(image), torch.from_numpy((pts / size).astype(np.float32))


def landmark_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between predicted and target landmarks (crop-normalised units)."""
    return (pred - target).norm(dim=-1).mean()


def heatmap_loss(z: torch.Tensor, target: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Mean Jensen–Shannon divergence between each normalised heatmap and a Gaussian at its target landmark.

    A coordinate loss alone only constrains the soft-argmax *mean*: a small model trained briefly then encodes positions
    by mass balance (the demo model put a corner peak in most maps), and such maps carry no positional prior from one
    frame to the next. Pulling them to one peak at the landmark (DSNT's regulariser) keeps z* a readable heatmap, which
    is what RwR's warm start and proximal anchor rely on.

    Args:
        z: heatmaps (B, L, H, W), non-negative.
        target: landmarks (B, L, 2) in crop-normalised units; heatmap pixel j sits at j / W (the soft-argmax grid).
        sigma: the Gaussian's standard deviation in heatmap pixels.
    """
    hgt, wid = z.shape[-2:]
    p = z / (1e-8 + z.sum(dim=(2, 3), keepdim=True))
    cols = torch.arange(wid, dtype=z.dtype, device=z.device)
    rows = torch.arange(hgt, dtype=z.dtype, device=z.device)
    dx = (cols - target[..., 0:1] * wid) ** 2  # (B, L, W)
    dy = (rows - target[..., 1:2] * hgt) ** 2  # (B, L, H)
    g = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))
    g = g / (1e-8 + g.sum(dim=(2, 3), keepdim=True))
    m = 0.5 * (p + g)

    def kl(a: torch.Tensor) -> torch.Tensor:
        return (a * (torch.log(a + 1e-12) - torch.log(m + 1e-12))).sum(dim=(2, 3))

    return (0.5 * kl(p) + 0.5 * kl(g)).mean()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order: a function of the run's seed and the epoch alone, so the order does not
    depend on what ran before (a resumed run, another machine)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _set_epoch(data: Dataset, epoch: int) -> None:
    """Tell every (nested) dataset the epoch, so augmentation draws differ between epochs but are reproducible."""
    for part in getattr(data, "datasets", [data]):
        if hasattr(part, "epoch"):
            part.epoch = epoch


def train(model: LDEQ, data: Dataset, cfg: LDEQConfig, out_dir: str | Path, resume: bool = True,
          max_steps: int | None = None, fingerprint: str = "") -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.epochs`` epochs, checkpointing after each; resume from ``out_dir`` if asked.

    Writes ``checkpoint.pt`` (weights, optimiser, scheduler, epoch, history, fingerprint; loadable with
    ``weights_only=True``) and ``config.json`` (:mod:`ldeq.checkpoint`). A checkpoint is resumed only when its
    ``fingerprint`` (a digest of the config and the training data, chosen by the caller) matches and it has the
    current module layout, so a changed run never continues a stale one. Returns the per-epoch history.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_json(out / CONFIG_FILE)
    torch.manual_seed(cfg.seed)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=list(cfg.lr_milestones), gamma=0.1)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT_FILE
    state = read_training_state(ckpt_path) if resume else None
    if state is not None and state.get("fingerprint") != fingerprint:
        log.info("ignoring %s: it was trained with another config or data", ckpt_path)
        state = None
    if state is not None and state.get("layout", 1) != LAYOUT:
        # the optimiser's moments follow the old parameter layout: restart rather than convert them
        log.info("ignoring %s: it has module layout %s, not %s", ckpt_path, state.get("layout", 1), LAYOUT)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    generator = torch.Generator()
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True,
                        drop_last=len(cast(Sized, data)) > cfg.batch_size, generator=generator, num_workers=0)
    steps = 0
    for epoch in range(start_epoch, cfg.epochs):
        _set_epoch(data, epoch)
        generator.manual_seed(epoch_seed(cfg.seed, epoch))  # a resumed run draws the order the whole run would
        model.train()
        started, losses = time.monotonic(), []
        for images, targets in loader:
            out_ = model(images)
            loss = landmark_loss(out_.landmarks, targets)
            if cfg.heatmap_reg > 0:
                loss = loss + cfg.heatmap_reg * heatmap_loss(out_.z, targets, cfg.heatmap_sigma)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optim.step()
            losses.append(float(loss.detach()))
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        sched.step()
        # wall time goes to the log only: the checkpoint is a DVC output and must be the same bytes on every run
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else math.nan,
                  "lr": optim.param_groups[0]["lr"]}
        history.append(record)
        log.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, cfg.epochs, record["loss"], time.monotonic() - started)
        save_training_state(ckpt_path, {"model": model.state_dict(), "optimizer": optim.state_dict(),
                                        "scheduler": sched.state_dict(), "epoch": epoch + 1,
                                        "history": history, "fingerprint": fingerprint})
        if max_steps is not None and steps >= max_steps:
            break
    return history
