"""A PyTorch ``Dataset`` over a WFLW-V folder (the pipeline's export or the official release).

``WFLWVideo(root, subset="hard")`` yields one frame per item; ``clip_len=T`` yields clips of T consecutive frames.
Each item is a dict::

    image        (H, W, 3) uint8 RGB            clips: (T, H, W, 3)
    landmarks    (98, 2) float32 pixels         clips: (T, 98, 2)
    valid        bool                           clips: (T,)
    uncertainty  float32 (NaN where unknown)    clips: (T,)
    box          (4,) float32 x1, y1, x2, y2    clips: (T, 4)
    video_id     str
    frame        int, the clip frame (clips: the first frame)

By default only valid frames are items (``valid_only``; the export's ``valid/`` says which, the official release has
every frame with finite labels valid), and clips lie inside runs of valid frames. ``transform(item)`` returns what
the loader yields instead (:class:`LDEQInput` gives LDEQ's network input and crop-normalised targets).

Worker-safe: the dataset holds paths and small label arrays only. Video files are opened lazily by the process that
reads them (a DataLoader worker opens its own, never one inherited through ``fork``), and each process keeps its
open files' decoders so that reading frames in order decodes each frame once; a jump backwards seeks to the keyframe
before the frame through a PTS index (frame k is the frame with the k-th smallest PTS: the decoded order).
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from ldeq.config import LDEQConfig
from ldeq.crop import crop_image, crop_transform, normalize_image, to_crop
from ldeq.layout import LayoutError, VideoLabels, load_video, split_ids

__all__ = ["WFLWVideo", "LDEQInput", "VideoFrames"]


class VideoFrames:
    """Decoded RGB frames of one video by ordinal, sequential reads cheap, backward reads by seeking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._pts: list[int] = []
        self._keys: list[int] = []
        self._next = 0  # the ordinal the open decoder yields next

    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path))
        except (OSError, av.error.FFmpegError) as err:
            raise LayoutError(f"{self.path}: cannot open the video ({err})") from None
        if not self._container.streams.video:
            raise LayoutError(f"{self.path}: no video stream")
        stream = self._container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in self._container.demux(stream) if p.pts is not None]
        self._pts = sorted(p for p, _ in packets)
        self._keys = sorted(p for p, key in packets if key)
        self._rewind(0)

    def _rewind(self, frame: int) -> None:
        """Point the decoder at the keyframe before ``frame`` (the stream's start if none is indexed)."""
        stream = self._container.streams.video[0]
        target = self._pts[frame] if frame < len(self._pts) else None
        key = self._keys[bisect.bisect_right(self._keys, target) - 1] if target is not None and self._keys and \
            self._keys[0] <= target else None
        self._container.seek(key if key is not None else 0, stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)
        self._next = bisect.bisect_left(self._pts, key) if key is not None else 0

    def read(self, frame: int) -> np.ndarray:
        """Frame ``frame`` (0-based decoded ordinal) as (H, W, 3) uint8 RGB."""
        if self._container is None:
            self._open()
        if not 0 <= frame < len(self._pts):
            raise LayoutError(f"{self.path}: frame {frame} asked for, the video has {len(self._pts)}")
        if frame < self._next or frame - self._next > 32:  # behind the decoder, or far ahead: seek
            self._rewind(frame)
        assert self._frames is not None
        for decoded in self._frames:
            ordinal = bisect.bisect_left(self._pts, decoded.pts) if decoded.pts is not None else self._next
            self._next = ordinal + 1
            if ordinal == frame:
                return np.asarray(decoded.to_ndarray(format="rgb24"))
            if ordinal > frame:
                break
        raise LayoutError(f"{self.path}: frame {frame} could not be decoded")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next = None, None, 0


class _OpenVideos:
    """This process's open videos (a few, least recently used closed first); rebuilt after a fork."""

    def __init__(self, keep: int = 4) -> None:
        self.keep, self.pid = keep, os.getpid()
        self.videos: OrderedDict[Path, VideoFrames] = OrderedDict()
        self._inherited: list[OrderedDict[Path, VideoFrames]] = []

    def get(self, path: Path) -> VideoFrames:
        if self.pid != os.getpid():  # a forked DataLoader worker: open its own files
            # the parent's decoders are kept, never used or freed: freeing one joins decoder threads that only
            # exist in the parent, which hangs the worker
            self._inherited.append(self.videos)
            self.pid, self.videos = os.getpid(), OrderedDict()
        if path not in self.videos:
            self.videos[path] = VideoFrames(path)
            while len(self.videos) > self.keep:
                self.videos.popitem(last=False)[1].close()
        self.videos.move_to_end(path)
        return self.videos[path]


class WFLWVideo(Dataset):
    """Frames or clips of one WFLW-V subset with their labels (see the module docstring for an item's keys).

    Args:
        root: a WFLW-V folder (``data/wflw_v`` of the pipeline, or the official release).
        subset: ``hard``, ``easy`` or ``all``.
        clip_len: None for single frames, else clips of this many consecutive frames.
        transform: called on every item; its result is what the dataset yields.
        valid_only: only valid frames (clips: wholly inside a run of valid frames).
        clip_stride: frames between the starts of two clips of a run (default ``clip_len``: no overlap).
    """

    def __init__(self, root: str | Path, subset: str = "hard", clip_len: int | None = None,
                 transform: Callable[[dict[str, Any]], Any] | None = None, valid_only: bool = True,
                 clip_stride: int | None = None) -> None:
        if clip_len is not None and clip_len < 1:
            raise ValueError(f"clip_len {clip_len}: must be at least 1 frame (or None for single frames)")
        self.root, self.subset, self.clip_len, self.transform = Path(root), subset, clip_len, transform
        self.videos: list[VideoLabels] = [load_video(self.root, v) for v in split_ids(self.root, subset)]
        stride = clip_stride or clip_len or 1
        self.items: list[tuple[int, int]] = []  # (video index, first frame)
        for i, video in enumerate(self.videos):
            use = video.valid if valid_only else np.ones(video.n_frames, bool)
            length = clip_len or 1
            for start, stop in _runs(use):
                self.items += [(i, s) for s in range(start, stop - length + 1, stride)]
        self._open = _OpenVideos()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        v, start = self.items[index]
        video = self.videos[v]
        frames = range(start, start + (self.clip_len or 1))
        reader = self._open.get(video.video)
        images = np.stack([reader.read(f) for f in frames])
        window = slice(start, start + len(frames))
        item: dict[str, Any] = {"image": images, "landmarks": video.landmarks[window], "valid": video.valid[window],
                                "uncertainty": video.uncertainty[window], "box": video.boxes[window],
                                "video_id": video.video_id, "frame": start}
        if self.clip_len is None:
            item.update({k: item[k][0] for k in ("image", "landmarks", "valid", "uncertainty", "box")})
            item["valid"], item["uncertainty"] = bool(item["valid"]), np.float32(item["uncertainty"])
        return self.transform(item) if self.transform is not None else item

    def __getstate__(self) -> dict[str, Any]:
        # pickled to spawned workers: open decoders do not travel (each worker opens its own)
        return {**self.__dict__, "_open": _OpenVideos()}


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True."""
    edges = np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


class LDEQInput:
    """A transform: one frame item → ``(image, target)`` for :func:`ldeq.train.train`: the WFLW-V crop of the box
    (``cfg.crop_scale`` × its longer side, ``cfg.input_size`` px, the config's mean/std), and the landmarks in
    crop-normalised units [0, 1)."""

    def __init__(self, cfg: LDEQConfig) -> None:
        self.size, self.scale = cfg.input_size, cfg.crop_scale
        self.mean, self.std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if np.ndim(item["landmarks"]) != 2:
            raise ValueError("LDEQInput takes single frames: build the dataset with clip_len=None")
        affine = crop_transform(item["box"], self.size, self.scale)
        crop = crop_image(item["image"], affine, self.size)
        target = to_crop(np.asarray(item["landmarks"], np.float64), affine) / self.size
        return (torch.from_numpy(normalize_image(crop, self.mean, self.std)),
                torch.from_numpy(target.astype(np.float32)))

