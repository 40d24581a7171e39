"""Checkpoints: save and resume training state, and load a model from this project's folders or released weights.

Two kinds of checkpoint load into :class:`~ldeq.model.LDEQ`:

* a folder written by :func:`ldeq.train.train`: ``config.json`` (the whole :class:`~ldeq.config.LDEQConfig`, crop
  convention included) next to ``checkpoint.pt`` (weights, optimiser, scheduler, history; plain tensors and
  containers, so ``torch.load(weights_only=True)`` reads it);
* a released ``polo5/LDEQ_RwR`` file (``final.pth.tar``): ``{"state_dict": ..., "args": argparse.Namespace}``; the
  config is read from ``args`` (:func:`official_config`) and the state dict must match exactly.

Every loader uses ``weights_only=True``; any mismatch raises :class:`CheckpointError`, one line naming the file and
the key.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ldeq.config import LDEQConfig, get_config
from ldeq.model import LDEQ

__all__ = ["CheckpointError", "LAYOUT", "CHECKPOINT_FILE", "CONFIG_FILE", "save_training_state",
           "read_training_state", "check_state_dict", "load_official_state_dict", "official_config",
           "legacy_to_current", "resolve_checkpoint", "load_checkpoint"]

log = logging.getLogger(__name__)

#: Version of the module layout in saved state dicts. 1 (no ``layout`` key): this project before it followed the
#: released names (hourglass up path numbered from the top, concat [upsampled, skip], bare ``head``); 2: released.
LAYOUT = 2
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
#: Suffixes of released weight files (``final.pth.tar``).
OFFICIAL_SUFFIXES = (".tar", ".pth")


class CheckpointError(KeyError):
    """A checkpoint cannot be read or does not match the model; the message names the file and the key."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write a training state (``model``, ``optimizer``, ``scheduler``, ``epoch``, ...) atomically, tagged with
    :data:`LAYOUT`; an interrupted write never leaves a truncated checkpoint behind."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "layout": LAYOUT}, tmp)
    _stable_serialization_id(tmp)
    tmp.replace(path)


def _stable_serialization_id(path: Path) -> None:
    """Replace the random ``.data/serialization_id`` torch.save writes by digits of a hash of the other members, so
    the same state is the same file (DVC hashes checkpoints; a random id made every training run a new output).

    The member is stored uncompressed with a data descriptor (torch's zip writer): the bytes and the CRC-32 in the
    descriptor and in the central directory are rewritten in place, sizes unchanged.
    """
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        target = next((m for m in members if m.filename.endswith("/.data/serialization_id")), None)
        if target is None or target.compress_type != zipfile.ZIP_STORED:
            return
        digest = hashlib.sha256()
        for member in members:
            if member is not target:
                digest.update(member.filename.encode() + archive.read(member.filename))
        start_dir = archive.start_dir
    size = target.file_size
    stable = str(int(digest.hexdigest(), 16)).zfill(size)[-size:].encode()
    crc = struct.pack("<I", zlib.crc32(stable))
    with open(path, "r+b") as fh:
        fh.seek(target.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
        data_at = target.header_offset + 30 + name_len + extra_len
        fh.seek(data_at)
        fh.write(stable)
        if target.flag_bits & 0x08:  # data descriptor after the data: optional signature, then the CRC
            signature = fh.read(4)
            fh.seek(data_at + size + (4 if signature == b"PK\x07\x08" else 0))
        else:
            fh.seek(target.header_offset + 14)
        fh.write(crc)
        fh.seek(start_dir)
        central = fh.read()
        at = 0
        while central[at:at + 4] == b"PK\x01\x02":  # the central directory's entries, one after another
            name_len, extra_len, comment_len = struct.unpack("<HHH", central[at + 28:at + 34])
            if central[at + 46:at + 46 + name_len].decode() == target.filename:
                fh.seek(start_dir + at + 16)
                fh.write(crc)
                break
            at += 46 + name_len + extra_len + comment_len


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; released files pickle an ``argparse.Namespace``, which is allowed."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint (weights_only=True): {first}") from None


def read_training_state(path: str | Path) -> dict[str, Any] | None:
    """The training state saved at ``path``, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    state = _torch_load(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: key 'model' missing: not a training checkpoint of ldeq.train")
    return state


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Any], source: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys with the same shapes.

    The message names ``source`` and the first offending key (missing, unexpected or wrong shape) and counts the
    others, so that a wrong layout is one readable line rather than torch's multi-line report.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = len(missing) + len(unexpected) + len(shapes)
    if not problems:
        return
    more = f" ({problems - 1} more mismatched key(s))" if problems > 1 else ""
    if missing:
        raise CheckpointError(f"{source}: key {missing[0]!r} missing from the checkpoint{more}")
    if shapes:
        key = shapes[0]
        raise CheckpointError(f"{source}: key {key!r} has shape {list(state[key].shape)} in the checkpoint, "
                              f"{list(expected[key].shape)} in the model{more}")
    raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} in the checkpoint{more}")


def _official_file(path: Path) -> dict[str, Any]:
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: key 'state_dict' missing: the file holds a {type(ckpt).__name__}")
    return ckpt


def load_official_state_dict(model: LDEQ, path: str | Path) -> None:
    """Load a released ``polo5/LDEQ_RwR`` checkpoint's ``state_dict`` (or a bare state dict) strictly.

    Unlike the released scripts (``load_state_dict(strict=False)``), any missing or unexpected key or wrong shape is
    an error: a silently skipped layer would still produce landmarks, just wrong ones.
    """
    path = Path(path)
    ckpt = _official_file(path)
    state = ckpt.get("state_dict", ckpt)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)


def _arg(args: Mapping[str, Any], key: str, source: Path, default: Any = None) -> Any:
    if key in args:
        return args[key]
    if default is None:
        raise CheckpointError(f"{source}: key 'args.{key}' missing: cannot build the model")
    return default


def official_config(args: argparse.Namespace | Mapping[str, Any], source: str | Path = "<args>") -> LDEQConfig:
    """The :class:`LDEQConfig` of a released checkpoint's training ``args``.

    The released test scripts rebuild the model and solver from these args (``stochastic_max_iters`` off): solver
    (``anderson``: m, λ, mixing β; or ``fpi``), ``max_iters``, relative stop (``rel_diff_target``) and the extra
    inference step unless ``take_one_less_inference_step``. Settings this model does not implement (an abs stop,
    Broyden, learned β, extra latent channels, explicit mode) raise :class:`CheckpointError` naming the key. Keys the
    released code only ever used at one value fall back to it when absent; architecture keys are required.
    """
    source = Path(source)
    a: dict[str, Any] = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    base = get_config("paper")

    def unsupported(key: str, value: Any, wanted: Any) -> None:
        if value != wanted:
            raise CheckpointError(f"{source}: key 'args.{key}' is {value!r}; only {wanted!r} is supported")

    n_keypoints = int(_arg(a, "n_keypoints", source))
    width = int(_arg(a, "injection_width", source))
    unsupported("cell_base_width", int(_arg(a, "cell_base_width", source, width)), width)
    unsupported("z_width", int(_arg(a, "z_width", source, n_keypoints)), n_keypoints)
    unsupported("model_mode", _arg(a, "model_mode", source, "implicit"), "implicit")
    unsupported("cell_norm", _arg(a, "cell_norm", source, "softargmax"), "softargmax")
    unsupported("cell_learn_softargmax_beta", bool(_arg(a, "cell_learn_softargmax_beta", source, False)), False)
    unsupported("stop_mode", _arg(a, "stop_mode", source, "rel"), "rel")
    unsupported("z0_mode", _arg(a, "z0_mode", source, "zeros"), "zeros")
    solver = _arg(a, "solver", source)
    if solver not in ("fpi", "anderson"):
        raise CheckpointError(f"{source}: key 'args.solver' is {solver!r}; only 'fpi' and 'anderson' are supported")
    input_size = int(_arg(a, "im_size", source, base.input_size))
    unsupported("heatmap_size", int(_arg(a, "heatmap_size", source, input_size // 4)), input_size // 4)
    return base.replace(
        num_landmarks=n_keypoints, input_size=input_size, injection_width=width,
        width_increment=int(_arg(a, "cell_width_increment", source)), hourglass_levels=4,
        groups=int(_arg(a, "cell_gn_groups", source)), beta=float(_arg(a, "cell_softargmax_beta", source)),
        solver=solver, max_iters=int(_arg(a, "max_iters", source)),
        tol=float(_arg(a, "rel_diff_target", source, base.tol)),
        anderson_m=int(_arg(a, "anderson_m", source, base.anderson_m)),
        anderson_lam=float(_arg(a, "anderson_lam", source, base.anderson_lam)),
        anderson_mixing=float(_arg(a, "anderson_beta", source, base.anderson_mixing)),
        extra_step=not bool(_arg(a, "take_one_less_inference_step", source, False)),
    )


def legacy_to_current(state: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename a layout-1 state dict (this project before it followed the released names) to the current layout.

    Layout 1 numbered the hourglass's up path from the top (its ``downchan{2i−1}``, ``downchan{2i}``,
    ``same{levels+i}`` at level i are now ``downchan{2j−1}``, ``downchan{2j}``, ``same{levels+j}`` with
    j = levels − i + 1), concatenated [upsampled, skip] where the released code has [skip, upsampled] (so the 1×1
    ``downchan{2j}`` weight's two input halves swap), and had a bare ``head`` conv (now ``head.conv``). The converted
    weights compute the same function.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition("hourglass.")
        name, _, leaf = rest.partition(".")
        if rest and (name.startswith("downchan") or name.startswith("same")):
            index = int(name.removeprefix("downchan").removeprefix("same"))
            if name.startswith("downchan"):
                i, second = (index + 1) // 2, index % 2 == 0
                j = levels - i + 1
                name = f"downchan{2 * j if second else 2 * j - 1}"
                if second and leaf == "conv.weight":
                    half = value.shape[1] // 2
                    value = torch.cat([value[:, half:], value[:, :half]], dim=1)
            elif index > levels:
                name = f"same{levels + (levels - (index - levels) + 1)}"
            key = f"{prefix}hourglass.{name}.{leaf}"
        elif key.endswith("cell.head.weight") or key.endswith("cell.head.bias"):
            key = key.replace("cell.head.", "cell.head.conv.")
        out[key] = value
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file of ``path``: a folder's ``checkpoint.pt``, or the file itself; missing → FileNotFoundError."""
    path = Path(path)
    weights = path / CHECKPOINT_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(2, "no checkpoint here (expected a folder with checkpoint.pt + config.json, or a "
                                   "released .pth.tar)", str(weights))
    return weights


def load_checkpoint(path: str | Path) -> LDEQ:
    """An LDEQ in eval mode from a checkpoint folder (or its ``checkpoint.pt``) or a released ``.pth.tar``.

    A folder's config comes from its ``config.json``; a released file's from its ``args``
    (:func:`official_config`). Layout-1 weights are converted with :func:`legacy_to_current`.
    """
    weights = resolve_checkpoint(path)
    config_file = weights.parent / CONFIG_FILE
    if weights.name != CHECKPOINT_FILE and weights.suffix in OFFICIAL_SUFFIXES or not config_file.is_file():
        ckpt = _official_file(weights)
        if "args" not in ckpt:
            raise CheckpointError(f"{weights}: key 'args' missing and no {CONFIG_FILE} next to it: "
                                  "cannot tell the model's configuration")
        model = LDEQ(official_config(ckpt["args"], weights))
        load_official_state_dict(model, weights)
        return model.eval()
    model = LDEQ(LDEQConfig.from_json(config_file))
    state = read_training_state(weights)
    assert state is not None  # resolve_checkpoint checked the file exists
    weights_state = state["model"]
    if state.get("layout", 1) == 1:
        weights_state = legacy_to_current(weights_state, model.cfg.hourglass_levels)
    check_state_dict(model, weights_state, weights)
    model.load_state_dict(weights_state, strict=True)
    return model.eval()
