"""The LDEQ model: stem (input injection), equilibrium cell (hourglass), heatmap normalisation, soft-argmax.

Module names, shapes and order follow the released checkpoints (``polo5/LDEQ_RwR``, ``models/ldeq.py``): ``tail``,
``deq_layer.cell.{tail,hourglass,head.conv}``, the hourglass's up path numbered from the bottleneck upwards; the
normalisation and soft-argmax carry no state. Their state dicts load with
:func:`ldeq.checkpoint.load_official_state_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ldeq.config import LDEQConfig
from ldeq.deq import solve_equilibrium
from ldeq.solvers import SolverInfo

__all__ = ["ConvBlock", "Hourglass", "Cell", "DEQLayer", "LDEQ", "LDEQOutput", "normalize_heatmaps",
           "soft_argmax"]

class ConvBlock(nn.Module):
    """Conv2d (bias, same padding) → LeakyReLU → norm. The activation comes before the norm, as released."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, norm: str | None = "gn", groups: int = 8,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, bias=True)
        self.act = nn.LeakyReLU() if act else nn.Identity()
        if norm == "gn":
            self.norm: nn.Module = nn.GroupNorm(groups, cout)
        elif norm == "bn":
            self.norm = nn.BatchNorm2d(cout)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class Hourglass(nn.Module):
    """Hourglass with ``levels`` levels; widths ``w0 = w, w1 = w + inc, ..., w_levels``.

    Down level i = 1..levels (from the top): ``same{i}`` (3×3 at w_{i−1}, kept as skip) → AvgPool 2 →
    ``upchan{i}`` (3×3, w_{i−1} → w_i). Bottleneck ``bottlneck`` (3×3 at w_levels, spelled as released).
    Up level j = 1..levels, numbered from the bottleneck upwards as in the released code (j = 1 works at w_{levels−1}):
    ``downchan{2j−1}`` (3×3, w_{levels−j+1} → w_{levels−j}) → nearest ×2 → concat [skip, upsampled] →
    ``downchan{2j}`` (1×1, 2·w_{levels−j} → w_{levels−j}) → residual ``same{levels+j}`` (5×5).
    """

    def __init__(self, width: int, increment: int, levels: int = 4, groups: int = 8) -> None:
        super().__init__()
        self.levels = levels
        widths = [width + increment * i for i in range(levels + 1)]
        # registered in the released order (down path, bottleneck, up path), so state dicts list keys as released
        for i in range(1, levels + 1):
            setattr(self, f"same{i}", ConvBlock(widths[i - 1], widths[i - 1], 3, groups=groups))
            setattr(self, f"upchan{i}", ConvBlock(widths[i - 1], widths[i], 3, groups=groups))
        self.bottlneck = ConvBlock(widths[-1], widths[-1], 3, groups=groups)
        for j in range(1, levels + 1):
            w_in, w_out = widths[levels - j + 1], widths[levels - j]
            setattr(self, f"downchan{2 * j - 1}", ConvBlock(w_in, w_out, 3, groups=groups))
            setattr(self, f"downchan{2 * j}", ConvBlock(2 * w_out, w_out, 1, groups=groups))
            setattr(self, f"same{levels + j}", ConvBlock(w_out, w_out, 5, groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(1, self.levels + 1):
            skip = getattr(self, f"same{i}")(x)
            skips.append(skip)
            x = getattr(self, f"upchan{i}")(F.avg_pool2d(skip, 2))
        x = self.bottlneck(x)
        for j in range(1, self.levels + 1):
            x = getattr(self, f"downchan{2 * j - 1}")(x)
            # the skip comes first in the concatenation, as released: downchan{2j}'s input channels depend on it
            x = torch.cat([skips[self.levels - j], F.interpolate(x, scale_factor=2, mode="nearest")], dim=1)
            x = getattr(self, f"downchan{2 * j}")(x)
            x = getattr(self, f"same{self.levels + j}")(x) + x
        return x


def normalize_heatmaps(h: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(β (h − max over space of h)) per channel: values in (0, 1], peak exactly 1."""
    peak = h.flatten(2).amax(dim=2)[..., None, None]
    return torch.exp(beta * (h - peak))


def soft_argmax(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode heatmaps (B, L, H, W) to coordinates in [0, (W−1)/W] of the crop and a spread σ per landmark.

    p = z / (1e-4 + Σz); x = Σ p·col / W, y = Σ p·row / H; no half-pixel offset (as released).
    """
    b, n, hgt, wid = z.shape
    p = z / (1e-4 + z.sum(dim=(2, 3), keepdim=True))
    cols = torch.arange(wid, dtype=z.dtype, device=z.device) / wid
    rows = torch.arange(hgt, dtype=z.dtype, device=z.device) / hgt
    px, py = p.sum(dim=2), p.sum(dim=3)
    x = (px * cols).sum(-1)
    y = (py * rows).sum(-1)
    var_x = (px * cols**2).sum(-1) - x**2
    var_y = (py * rows**2).sum(-1) - y**2
    sigma = torch.sqrt((0.5 * var_x + 0.5 * var_y).clamp_min(0))
    return torch.stack([x, y], dim=-1), sigma


class Cell(nn.Module):
    """f(z, x): fuse z with the injection, hourglass, 1×1 head (a conv block without norm or activation, so its
    conv sits under ``head.conv`` as released), heatmap normalisation (no parameters)."""

    def __init__(self, cfg: LDEQConfig) -> None:
        super().__init__()
        w = cfg.injection_width
        self.beta = cfg.beta
        self.tail = ConvBlock(cfg.num_landmarks + w, w, 1, groups=cfg.groups)
        self.hourglass = Hourglass(w, cfg.width_increment, cfg.hourglass_levels, cfg.groups)
        self.head = ConvBlock(w, cfg.num_landmarks, 1, norm=None, act=False)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.hourglass(self.tail(torch.cat([z, x], dim=1))))
        return normalize_heatmaps(h, self.beta)


class DEQLayer(nn.Module):
    """Holds the cell; its gradient modes live in :mod:`ldeq.deq`."""

    def __init__(self, cfg: LDEQConfig) -> None:
        super().__init__()
        self.cell = Cell(cfg)


@dataclass
class LDEQOutput:
    """Landmarks in crop-normalised coordinates (B, L, 2), spread σ (B, L), equilibrium z (B, L, h, w)."""

    landmarks: torch.Tensor
    sigma: torch.Tensor
    z: torch.Tensor
    info: SolverInfo


class LDEQ(nn.Module):
    """Landmark deep equilibrium model.

    Example:
        >>> model = LDEQ(get_config("tiny")).eval()  # doctest: +SKIP
        >>> out = model(images)                     # images: (B, 3, S, S), ImageNet-normalised
        >>> out.landmarks.shape                     # (B, 98, 2), in [0, 1) of the crop
    """

    def __init__(self, cfg: LDEQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.injection_width
        self.tail = nn.Sequential(
            ConvBlock(3, w // 4, 7, 2, norm="bn"),
            ConvBlock(w // 4, w // 2, 3, norm="bn"),
            nn.MaxPool2d(2),
            ConvBlock(w // 2, w, 3, norm="bn"),
        )
        self.deq_layer = DEQLayer(cfg)

    def inject(self, images: torch.Tensor) -> torch.Tensor:
        """The input injection x (run once per image)."""
        return self.tail(images)

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """The cold-start z0 for injections ``x``."""
        return x.new_zeros(x.shape[0], self.cfg.num_landmarks, x.shape[2], x.shape[3])

    def forward(self, images: torch.Tensor, z0: torch.Tensor | None = None, max_iters: int | None = None,
                grad: str | None = None, anchor: torch.Tensor | None = None, gamma: float = 0.0,
                solver: str | None = None) -> LDEQOutput:
        """Solve for the equilibrium (from ``z0`` or zeros) and decode landmarks.

        In training mode the gradient is taken as ``grad`` (default ``cfg.grad``); the solver itself never builds
        a graph, so memory does not grow with the number of solver iterations. ``anchor``/``gamma`` select the
        proximal map used by RwR (see :func:`ldeq.deq.solve_equilibrium`).
        """
        x = self.inject(images)
        z0 = self.zeros(x) if z0 is None else z0
        z, info = solve_equilibrium(self.deq_layer.cell, self.cfg, x, z0, training=self.training, max_iters=max_iters,
                                    grad=grad, anchor=anchor, gamma=gamma, solver=solver)
        landmarks, sigma = soft_argmax(z)
        return LDEQOutput(landmarks, sigma, z, info)
