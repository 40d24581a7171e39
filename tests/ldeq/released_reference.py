"""An independent, functional statement of the released LDEQ (``polo5/LDEQ_RwR``) for the tests to compare against.

Written from the released layout and evaluation steps (``models/ldeq.py``, ``utils/normalize.py``,
``utils/solvers.py``, ``test_LDEQ_WFLW_V.py``, ``datasets/WFLW_V/helpers.py``), not from :mod:`ldeq`: key names and
shapes, the forward pass on a state dict, the WFLW-V crop, and the legacy (layout 1) names of this project.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

HG = "deq_layer.cell.hourglass"
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def official_shapes(n_keypoints: int = 98, width: int = 264, increment: int = 24) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the released LDEQ with its shape, in the released registration order.

    Stem: 7×7/2 → 3×3 → maxpool → 3×3 convs with BatchNorm (w/4, w/2, w). Cell: 1×1 ``tail`` (z ⊕ x → w, GN);
    hourglass at widths w, w+i, w+2i, w+3i, w+4i, its up path numbered from the bottleneck upwards; ``head.conv``
    (1×1, no norm). Normalisation and soft-argmax: nothing.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int, norm: str | None) -> None:
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        shapes[f"{name}.conv.bias"] = (cout,)
        if norm is not None:
            shapes[f"{name}.norm.weight"] = (cout,)
            shapes[f"{name}.norm.bias"] = (cout,)
        if norm == "bn":
            shapes[f"{name}.norm.running_mean"] = (cout,)
            shapes[f"{name}.norm.running_var"] = (cout,)
            shapes[f"{name}.norm.num_batches_tracked"] = ()

    w = width
    conv("tail.0", 3, w // 4, 7, "bn")
    conv("tail.1", w // 4, w // 2, 3, "bn")
    conv("tail.3", w // 2, w, 3, "bn")
    conv("deq_layer.cell.tail", n_keypoints + w, w, 1, "gn")
    ws = [w + increment * k for k in range(5)]
    for i in range(1, 5):
        conv(f"{HG}.same{i}", ws[i - 1], ws[i - 1], 3, "gn")
        conv(f"{HG}.upchan{i}", ws[i - 1], ws[i], 3, "gn")
    conv(f"{HG}.bottlneck", ws[4], ws[4], 3, "gn")
    for j, (hi, lo) in enumerate([(ws[4], ws[3]), (ws[3], ws[2]), (ws[2], ws[1]), (ws[1], ws[0])], start=1):
        conv(f"{HG}.downchan{2 * j - 1}", hi, lo, 3, "gn")
        conv(f"{HG}.downchan{2 * j}", 2 * lo, lo, 1, "gn")
        conv(f"{HG}.same{4 + j}", lo, lo, 5, "gn")
    conv("deq_layer.cell.head", w, n_keypoints, 1, None)
    return shapes


def official_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.05) -> dict:
    """Random values of the right shapes: small conv weights (a tame cell), positive variances, unit norm weights."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("norm.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = scale * torch.randn(shape, generator=g)
    return state


def released_args(width: int, increment: int, solver: str = "fpi", max_iters: int = 5, tol: float = 1e-4,
                  beta: float = 0.3, **extra: object) -> argparse.Namespace:
    """Training ``args`` as a released checkpoint pickles them (the keys the model and its solver read)."""
    values = dict(landmark_model_name="ldeq", cell_name="Cell0", model_mode="implicit", n_keypoints=98, z_width=98,
                  im_size=256, heatmap_size=64, injection_width=width, cell_base_width=width,
                  cell_width_increment=increment, cell_gn_groups=8, cell_norm="softargmax",
                  cell_softargmax_beta=beta, cell_learn_softargmax_beta=False, solver=solver, max_iters=max_iters,
                  stop_mode="rel", rel_diff_target=tol, abs_diff_target=1e-3, anderson_m=6, anderson_lam=1e-4,
                  anderson_beta=1.0, take_one_less_inference_step=False, stochastic_max_iters=False, z0_mode="zeros")
    values.update(extra)
    return argparse.Namespace(**values)


def _block(state: dict, name: str, x: torch.Tensor, norm: str | None, groups: int = 8, stride: int = 1,
           conv: str = ".conv") -> torch.Tensor:
    """Released ``Conv``: conv (same padding, bias) → LeakyReLU → norm (the norm comes last); no norm, no act."""
    weight = state[f"{name}{conv}.weight"]
    x = F.conv2d(x, weight, state[f"{name}{conv}.bias"], stride=stride, padding=(weight.shape[-1] - 1) // 2)
    if norm is None:
        return x
    x = F.leaky_relu(x)
    if norm == "bn":
        return F.batch_norm(x, state[f"{name}.norm.running_mean"], state[f"{name}.norm.running_var"],
                            state[f"{name}.norm.weight"], state[f"{name}.norm.bias"], training=False)
    return F.group_norm(x, groups, state[f"{name}.norm.weight"], state[f"{name}.norm.bias"])


def _stem(state: dict, images: torch.Tensor) -> torch.Tensor:
    x = _block(state, "tail.0", images, "bn", stride=2)
    x = _block(state, "tail.1", x, "bn")
    return _block(state, "tail.3", F.max_pool2d(x, 2), "bn")


def _hourglass(state: dict, x: torch.Tensor, prefix: str = HG, legacy: bool = False, levels: int = 4) -> torch.Tensor:
    """The released hourglass; ``legacy`` reads this project's layout-1 names and concatenates [upsampled, skip]."""
    skips = []
    for i in range(1, levels + 1):
        skip = _block(state, f"{prefix}.same{i}", x, "gn")
        skips.append(skip)
        x = _block(state, f"{prefix}.upchan{i}", F.avg_pool2d(skip, 2), "gn")
    x = _block(state, f"{prefix}.bottlneck", x, "gn")
    for j in range(1, levels + 1):
        n = levels - j + 1 if legacy else j  # legacy numbered the up path from the top
        x = _block(state, f"{prefix}.downchan{2 * n - 1}", x, "gn")
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        skip = skips[levels - j]
        x = _block(state, f"{prefix}.downchan{2 * n}", torch.cat([up, skip] if legacy else [skip, up], 1), "gn")
        x = _block(state, f"{prefix}.same{levels + n}", x, "gn") + x
    return x


def reference_cell(state: dict, z: torch.Tensor, x: torch.Tensor, beta: float, legacy: bool = False,
                   levels: int = 4) -> torch.Tensor:
    """Cell0: tail on [z, x] → hourglass → head → exp(β (h − max h)) (``Normalize`` in softargmax mode)."""
    h = _block(state, "deq_layer.cell.tail", torch.cat([z, x], 1), "gn")
    h = _hourglass(state, h, legacy=legacy, levels=levels)
    h = _block(state, "deq_layer.cell.head", h, None, conv="" if legacy else ".conv")  # legacy: a bare conv
    return torch.exp(beta * (h - torch.amax(h, dim=(2, 3), keepdim=True)))


def reference_keypoints(z: torch.Tensor) -> torch.Tensor:
    """``HeatmapsToKeypoints``: p = z / (1e-4 + Σz); x = Σ p·col / H, y = Σ p·row / H."""
    _, _, hgt, wid = z.shape
    p = z / (1e-4 + z.sum(dim=(2, 3), keepdim=True))
    cols = torch.arange(wid, dtype=z.dtype).repeat(hgt, 1)
    rows = torch.arange(hgt, dtype=z.dtype).view(hgt, 1).repeat(1, wid)
    return torch.stack([(p * cols).sum(dim=(2, 3)) / hgt, (p * rows).sum(dim=(2, 3)) / hgt], dim=2)


@torch.no_grad()
def reference_forward(state: dict, images: torch.Tensor, beta: float, max_iters: int, tol: float,
                      z0: torch.Tensor | None = None, extra_step: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Released inference with the ``fpi`` solver: stem once, z ← f(z) until the batch-mean relative step is below
    ``tol`` or ``max_iters`` steps, one extra f step, keypoints. Returns (keypoints in [0, 1), z after the step)."""
    x = _stem(state, images)
    n = state["deq_layer.cell.head.conv.weight"].shape[0]
    z = torch.zeros(x.shape[0], n, x.shape[2], x.shape[3]) if z0 is None else z0
    for _ in range(max_iters):
        new = reference_cell(state, z, x, beta)
        step = (new - z).flatten(1).norm(dim=1) / (1e-5 + new.flatten(1).norm(dim=1))
        z = new
        if float(step.mean()) < tol:
            break
    if extra_step:
        z = reference_cell(state, z, x, beta)
    return reference_keypoints(z), z


def released_crop_matrix(bbox: np.ndarray, extra_scale: float = 1.2, size: int = 256) -> np.ndarray:
    """``get_transform_from_bbox``: int box (+0.5), centre (x1 + w//2, y1 + h//2), side extra_scale × max side; the
    matrix from three float32 point pairs (centre, a point half a side above it, and a perpendicular one)."""
    x1, y1, x2, y2 = (np.asarray(bbox[:4], np.float64) + 0.5).astype(np.int32)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    centre = np.array([x1 + w // 2, y1 + h // 2], np.float32)
    side = max(x2 - x1, y2 - y1) * extra_scale

    def third(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a - b
        return b + np.array([-d[1], d[0]], np.float32)

    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = centre, centre + np.array([0, -0.5 * side], np.float32)
    dst[0], dst[1] = [size / 2, size / 2], [size / 2, 0]
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def released_network_input(bgr_frame: np.ndarray, bbox: np.ndarray, size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """The released WFLW-V evaluation's per-frame input: warp the OpenCV (BGR) frame, swap to RGB with
    ``cvtColor(RGB2BGR)``, ``ToTensor`` (/255, CHW) and ``Normalize`` with ImageNet mean/std."""
    matrix = released_crop_matrix(bbox, 1.2, size)
    face = cv2.warpAffine(bgr_frame, matrix, (size, size), flags=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    tensor = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (tensor - mean) / std, matrix


def released_to_frame(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``apply_affine_transform_to_kpts(kpts, M, inverse=True)``: (pt − t) · inv(Aᵀ)."""
    return (keypoints - matrix[:, 2]) @ np.linalg.inv(matrix[:, 0:2].T)


def to_legacy(state: dict, levels: int) -> dict:
    """This project's layout-1 state dict for a current one: up path numbered from the top, the 1×1 ``downchan``
    weights' input halves in [upsampled, skip] order, a bare ``head`` conv."""
    out = {}
    for key, value in state.items():
        if ".hourglass.downchan" in key or ".hourglass.same" in key:
            prefix, rest = key.split("hourglass.")
            name, leaf = rest.split(".", 1)
            kind = "downchan" if name.startswith("downchan") else "same"
            index = int(name[len(kind):])
            if kind == "downchan":
                j, second = (index + 1) // 2, index % 2 == 0
                i = levels - j + 1
                name = f"downchan{2 * i if second else 2 * i - 1}"
                if second and leaf == "conv.weight":
                    half = value.shape[1] // 2
                    value = torch.cat([value[:, half:], value[:, :half]], dim=1)
            elif index > levels:
                name = f"same{levels + (levels - (index - levels) + 1)}"
            key = f"{prefix}hourglass.{name}.{leaf}"
        elif key.startswith("deq_layer.cell.head.conv."):
            key = key.replace("head.conv.", "head.")
        out[key] = value
    return out
