"""A torch port of face-api.js's 68-point landmark CNNs (``FaceLandmark68Net`` and ``FaceLandmark68TinyNet``).

The weights come from the npm package ``@vladmandic/face-api`` (MIT) as TF.js files: a JSON manifest listing each
tensor (name, shape, dtype, optional uint8/uint16 quantisation) and a binary shard holding them in manifest order.
The manifest is parsed as data; nothing from the package is executed.

Architecture (from the package's ``src/faceFeatureExtractor`` and ``src/faceLandmarkNet``): a 112×112 RGB input,
minus the mean RGB ``(122.782, 117.001, 104.298)``, divided by 255; four (tiny: three) dense blocks, each a stride-2
conv followed by depthwise-separable convs whose inputs are the ReLU of the running sum of the block's outputs;
a global average pool; a fully connected layer to 136 values, (x, y) interleaved, as fractions of the input square.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MEAN_RGB", "INPUT_SIZE", "load_tfjs_weights", "FaceLandmark68Net"]

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 112

_QUANT_DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
_PLAIN_DTYPES = {"float32": np.float32, "int32": np.int32}


def load_tfjs_weights(manifest: Path, shard: Path) -> dict[str, np.ndarray]:
    """Read a one-shard TF.js weights manifest and its binary; return float32 arrays by name (TF layout).

    Quantised tensors are dequantised as ``q × scale + min``.

    Raises:
        ValueError: the manifest names other shards, or the binary's size does not match the manifest.
    """
    groups = json.loads(manifest.read_text())
    paths = [p for group in groups for p in group["paths"]]
    if paths != [shard.name]:
        raise ValueError(f"{manifest.name} expects shards {paths}, got {shard.name!r}")
    data = shard.read_bytes()
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for entry in (w for group in groups for w in group["weights"]):
        shape = [int(d) for d in entry["shape"]]
        count = int(np.prod(shape, dtype=np.int64))
        quant = entry.get("quantization")
        dtype = np.dtype(_QUANT_DTYPES[quant["dtype"]] if quant else _PLAIN_DTYPES[entry["dtype"]])
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(data):
            raise ValueError(f"{shard.name} ends inside tensor {entry['name']!r}")
        raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += nbytes
        values = raw * np.float64(quant["scale"]) + np.float64(quant["min"]) if quant else raw
        weights[entry["name"]] = values.astype(np.float32).reshape(shape)
    if offset != len(data):
        raise ValueError(f"{shard.name} has {len(data) - offset} bytes beyond the manifest's tensors")
    return weights


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF 'same' padding: the odd extra pixel goes to the bottom/right (torch's symmetric padding would shift)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad wants (left, right, top, bottom)
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


@dataclass(frozen=True)
class _SeparableConv:
    depthwise: torch.Tensor  # (C, 1, k, k)
    pointwise: torch.Tensor  # (C_out, C, 1, 1)
    bias: torch.Tensor

    def __call__(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        k = self.depthwise.shape[-1]
        x = F.conv2d(_same_pad(x, k, stride), self.depthwise, stride=stride, groups=x.shape[1])
        return F.conv2d(x, self.pointwise, self.bias)


class FaceLandmark68Net:
    """The full (4 dense blocks, 256 features) or tiny (3 blocks, 128 features) network, for inference only."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        t = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in weights.items()}
        self.blocks: list[tuple[tuple[torch.Tensor, torch.Tensor] | _SeparableConv, list[_SeparableConv]]] = []
        n_blocks = 1 + max(int(name.split("/")[0].removeprefix("dense")) for name in t if name.startswith("dense"))
        for b in range(n_blocks):
            prefix = f"dense{b}"
            if b == 0:  # a plain conv on the image: TF [kh, kw, in, out] -> torch [out, in, kh, kw]
                first: tuple[torch.Tensor, torch.Tensor] | _SeparableConv = (
                    t[f"{prefix}/conv0/filters"].permute(3, 2, 0, 1).contiguous(), t[f"{prefix}/conv0/bias"])
            else:
                first = self._separable(t, f"{prefix}/conv0")
            n_convs = sum(1 for name in t if name.startswith(f"{prefix}/") and name.endswith("/bias"))
            self.blocks.append((first, [self._separable(t, f"{prefix}/conv{i}") for i in range(1, n_convs)]))
        self.fc_weight, self.fc_bias = t["fc/weights"], t["fc/bias"]
        self.n_points = self.fc_bias.shape[0] // 2
        self.input_size = INPUT_SIZE
        # The pool's window equals the last feature map (7 for 4 blocks, 14 for 3), so it averages all of it.
        self.pool = INPUT_SIZE // 2**n_blocks

    @staticmethod
    def _separable(t: dict[str, torch.Tensor], prefix: str) -> _SeparableConv:
        # depthwise TF [kh, kw, in, 1] -> torch [in, 1, kh, kw]; pointwise [1, 1, in, out] -> [out, in, 1, 1]
        return _SeparableConv(t[f"{prefix}/depthwise_filter"].permute(2, 3, 0, 1).contiguous(),
                              t[f"{prefix}/pointwise_filter"].permute(3, 2, 0, 1).contiguous(), t[f"{prefix}/bias"])

    @torch.inference_mode()
    def __call__(self, rgb112: np.ndarray) -> np.ndarray:
        """Points ``(68, 2)`` as fractions of the input square from one uint8/float RGB image ``(112, 112, 3)``."""
        arr = (np.asarray(rgb112, np.float32) - np.asarray(MEAN_RGB, np.float32)) / 255.0
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
        for first, rest in self.blocks:
            if isinstance(first, _SeparableConv):
                out = first(x, stride=2)
            else:
                filters, bias = first
                out = F.conv2d(_same_pad(x, filters.shape[-1], 2), filters, bias, stride=2)
            outs = [torch.relu(out)]
            for conv in rest:  # each conv sees the ReLU of the sum of the block's outputs so far
                outs.append(conv(torch.relu(torch.stack(outs).sum(0)), stride=1))
            x = torch.relu(torch.stack(outs).sum(0))
        x = F.avg_pool2d(x, self.pool, stride=2).flatten(1)
        return (x @ self.fc_weight + self.fc_bias).reshape(self.n_points, 2).numpy()
