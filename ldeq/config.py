"""LDEQ configuration: one dataclass, named profiles (paper, demo, tiny)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LDEQConfig", "PROFILES", "get_config"]


@dataclass(frozen=True)
class LDEQConfig:
    """Everything that defines an LDEQ model, its solver, its gradient and its training recipe.

    Model defaults are the released WFLW checkpoint's (``polo5/LDEQ_RwR``): 256 input, 64×64 heatmaps, injection
    width 264 growing by 24 per hourglass level, GroupNorm(8) in the cell, β = 0.3, Anderson(m=6, λ=1e-4), 5 iterations,
    stop at relative residual 1e-4, one extra step after the solver; crops of 1.2 × the box, ImageNet normalisation.
    """

    num_landmarks: int = 98
    input_size: int = 256
    injection_width: int = 264
    width_increment: int = 24
    hourglass_levels: int = 4
    groups: int = 8
    beta: float = 0.3
    # solver
    solver: str = "anderson"  # "anderson" | "fpi"
    max_iters: int = 5
    tol: float = 1e-4
    anderson_m: int = 6
    anderson_lam: float = 1e-4
    anderson_mixing: float = 1.0
    extra_step: bool = True
    # training gradient
    grad: str = "phantom"  # "phantom" | "jfb" | "implicit" | "unrolled" (contrast only: memory grows with iters)
    phantom_steps: int = 3
    phantom_tau: float = 1.0
    implicit_max_iters: int = 5
    # training recipe
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (30, 50)
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    # Jensen–Shannon pull of each normalised heatmap towards a Gaussian at its target (DSNT, Nibali et al. 2018);
    # 0 = coordinate loss alone. The released recipe is unknown; see ldeq.train.heatmap_loss for why the demo uses it.
    heatmap_reg: float = 0.0
    heatmap_sigma: float = 1.0  # the target Gaussian's σ, in heatmap pixels
    seed: int = 2
    # crop convention (WFLW-V): square of side crop_scale × the box's longer side, then ImageNet mean/std on RGB in
    # [0, 1]; written to config.json so that a checkpoint carries the preprocessing it was trained with
    crop_scale: float = 1.2
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def heatmap_size(self) -> int:
        return self.input_size // 4

    def replace(self, **changes: Any) -> LDEQConfig:
        """A copy with ``changes`` applied (unknown keys raise ``TypeError``)."""
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return dataclasses.replace(self, **changes)

    def to_json(self, path: str | Path) -> None:
        """Write the config as plain JSON next to a checkpoint (never pickled inside it)."""
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> LDEQConfig:
        return cls().replace(**json.loads(Path(path).read_text()))


PROFILES: dict[str, LDEQConfig] = {
    "paper": LDEQConfig(),
    "paper_wflw_v": LDEQConfig(beta=0.4, solver="fpi", tol=5e-4, seed=0),
    "demo": LDEQConfig(input_size=96, injection_width=32, width_increment=8, hourglass_levels=3, solver="fpi",
                       max_iters=5, tol=5e-4, epochs=16, batch_size=16, lr=1e-3, lr_milestones=(12,), heatmap_reg=1.0,
                       seed=0),
    "tiny": LDEQConfig(input_size=64, injection_width=16, width_increment=8, hourglass_levels=2, solver="fpi",
                       max_iters=3, tol=5e-4, epochs=1, batch_size=8, lr=1e-3, lr_milestones=(), seed=0),
}


def get_config(profile: str, **overrides: Any) -> LDEQConfig:
    """The named profile with ``overrides`` applied."""
    try:
        base = PROFILES[profile]
    except KeyError:
        raise KeyError(f"unknown LDEQ profile {profile!r}; known: {sorted(PROFILES)}") from None
    return base.replace(**overrides)
