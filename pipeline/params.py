"""Typed view of ``params.yaml``: one dataclass per stage, and profile overlays.

``params.yaml`` holds the active values (the embedded demo by default). A profile in ``profiles/`` overrides some of
them; ``python -m pipeline.params apply profiles/wflw_v.yaml`` writes the merged values back, so that DVC sees which
keys changed and re-runs only the stages that read them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ClusterParams", "DemoParams", "SourcesParams", "DownloadParams", "TrimParams", "FacesParams", "LabelParams",
    "ScoreParams", "AnnotateParams", "TrainParams", "EvaluateParams", "load", "stage_params", "merge",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterParams:
    scheduler: str | None = None  # address of an existing dask scheduler; None starts a LocalCluster
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"


@dataclass(frozen=True)
class DemoParams:
    n_clips: int = 24
    fps: int = 30
    width: int = 640
    height: int = 480
    clip_frames: int = 90
    lead_frames: int = 24
    tail_frames: int = 16
    seed: int = 0


@dataclass(frozen=True)
class SourcesParams:
    list: str = "data/demo/sources.csv"
    easy_ids: str | None = None
    hard_ids: str | None = None
    allow_file_urls: bool = True
    strict: bool = True
    limit: int | None = None


@dataclass(frozen=True)
class DownloadParams:
    format: str = "bv*[height>=480][ext=mp4]/b[height>=480][ext=mp4]/bv*[ext=mp4]/b[ext=mp4]/bv*/b"
    retries: int = 3
    sleep_interval: float = 0.0
    max_sleep_interval: float = 0.0
    ratelimit: int | None = None
    cookiefile: str | None = None
    allow_file_urls: bool = True
    timeout: float = 60.0


@dataclass(frozen=True)
class TrimParams:
    codec: str = "libx264"
    crf: int = 12
    preset: str = "veryfast"


@dataclass(frozen=True)
class FacesParams:
    detector: str = "dlib_hog"
    detect_max_side: int = 640
    min_score: float = 0.0
    iou_threshold: float = 0.3
    max_gap: int = 30
    max_shift: float = 0.6  # stitching: largest centre jump (in box sides) across a broken track
    min_track_frames: int = 10
    smooth_window: int = 7
    smooth_sigma: float = 5.0  # frames; Gaussian on centre and size after the median (0 = off)


@dataclass(frozen=True)
class LabelParams:
    models: tuple[str, ...] = ("dlib_68", "mediapipe_mesh_v2")


@dataclass(frozen=True)
class ScoreParams:
    n_hard: int = 12
    min_models: int = 2


@dataclass(frozen=True)
class AnnotateParams:
    export_dir: str = "data/wflw_v"


@dataclass(frozen=True)
class TrainParams:
    profile: str = "demo"  # an ldeq.config profile name; the keys below override it
    overrides: dict[str, Any] = field(default_factory=dict)
    frame_stride: int = 3
    seed: int = 0
    wflw_annotations: str | None = None  # official list_98pt_rect_attr_train.txt: WFLW stills as a first source
    wflw_images: str | None = None  # the WFLW_images/ folder those paths are relative to


@dataclass(frozen=True)
class EvaluateParams:
    rwr_iters: int = 1
    max_videos: int | None = None
    frame0_full_solve: bool = True
    rwr_align: bool = True  # resample z*_{t-1} into frame t's crop (the released code reuses it as is)
    rwr_gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)  # proximal RwR anchors searched on the easy split
    tune_videos: int = 4  # easy videos used to tune γ


_STAGES: dict[str, type] = {
    "cluster": ClusterParams, "demo": DemoParams, "sources": SourcesParams, "download": DownloadParams,
    "trim": TrimParams, "faces": FacesParams, "label": LabelParams, "score": ScoreParams,
    "annotate": AnnotateParams, "train": TrainParams, "evaluate": EvaluateParams,
}


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read the raw params mapping."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def stage_params(stage: str, path: str | Path = "params.yaml") -> Any:
    """Return the typed params of ``stage`` (``"faces"`` → :class:`FacesParams`)."""
    raw = load(path)
    return _build(_STAGES[stage], raw.get(stage) or {}, f"{path} [{stage}]")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply a profile overlay to params.yaml, or check params.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    apply = sub.add_parser("apply", help="merge a profile into params.yaml")
    apply.add_argument("profile", type=Path)
    apply.add_argument("--params", type=Path, default=Path("params.yaml"))
    check = sub.add_parser("check", help="validate every stage block")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    if args.cmd == "apply":
        merged = merge(load(args.params), yaml.safe_load(args.profile.read_text(encoding="utf-8")) or {})
        args.params.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    for stage in _STAGES:
        stage_params(stage, args.params)
    print(f"{args.params}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
