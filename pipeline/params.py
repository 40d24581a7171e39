"""Typed, validated view of ``params.yaml``: one pydantic model per stage block, and profile overlays.

``params.yaml`` is the single source of every value; the models here hold types and constraints only (no
defaults), are strict (``'false'`` in quotes is not a bool) and forbid unknown keys. A problem is reported as one
line naming the file, the line, the key and what is wrong (:class:`ParamsError`).

A profile in ``profiles/`` overrides some values; ``python -m pipeline.params apply profiles/wflw_v.yaml`` writes
the merged values back (after validating them), so that DVC sees which keys changed and re-runs only the stages
that read them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from pipeline import registry

__all__ = [
    "ParamsError", "ClusterParams", "SlurmParams", "KubernetesParams", "CacheParams", "DemoParams", "SourcesParams",
    "DownloadParams", "TrimParams",
    "FacesParams",
    "LabelParams", "ModelsParams", "ScoreParams", "AnnotateParams", "ReviewParams", "TrainParams", "EvaluateParams",
    "ReportParams",
    "Params",
    "PROJECT_PARAMS", "load", "load_params", "stage_params", "merge", "apply_profile",
]

#: The project's own params file (tests and library helpers use it; stages take ``--params``).
PROJECT_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


class ParamsError(ValueError):
    """A params file is missing, unreadable, or has a bad value; the message is one line naming file and key."""


def _as_tuple(value: Any) -> Any:
    # YAML has no tuples; sequences are stored as tuples so that params stay immutable and hashable.
    return tuple(value) if isinstance(value, list) else value


NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]
FloatTuple = Annotated[tuple[float, ...], BeforeValidator(_as_tuple)]


def _registered(*registries: registry.Registry) -> AfterValidator:
    """A name that must be in one of ``registries`` (read from their source: no model code is imported)."""
    def check(name: str) -> str:
        problem = registry.unknown_name(name, *registries)
        if problem:
            raise PydanticCustomError("unknown_name", "{problem}", {"problem": problem})
        return name

    return AfterValidator(check)


def _detector_chain(chain: str) -> str:
    for name in chain.split("|"):  # as pipeline.faces.detectors.create_detector splits it
        problem = registry.unknown_name(name.strip(), registry.DETECTORS, where=" in the chain" if "|" in chain else "")
        if problem:
            raise PydanticCustomError("unknown_name", "{problem}", {"problem": problem})
    return chain


DetectorChain = Annotated[str, AfterValidator(_detector_chain)]
LandmarkModelName = Annotated[str, _registered(registry.LANDMARK_MODELS)]
LabelModelName = Annotated[str, _registered(registry.LANDMARK_MODELS, registry.FIVE_POINT_MODELS)]


class _Block(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SlurmParams(_Block):
    """``cluster.kind: slurm``: dask-jobqueue's SLURMCluster (pipeline/cluster_backends.py)."""

    queue: str | None  # partition (#SBATCH -p); None = the site's default
    account: str | None  # #SBATCH -A
    cores: PosInt  # per job: threads of all its worker processes together
    processes: PosInt  # worker processes per job (each gets cores / processes threads)
    memory: str  # per job, e.g. 16GiB
    walltime: Annotated[str, Field(pattern=r"^(\d+-)?\d+(:\d+){0,2}$")]  # Slurm's [D-]HH:MM:SS (or MM, MM:SS)
    job_extra: StrTuple  # further #SBATCH directives, e.g. ["--qos=normal"]
    python: str | None  # the interpreter on the nodes (a shared environment); None = the one running the stage
    interface: str | None  # network interface between scheduler and workers (e.g. ib0); None = the default route
    log_directory: str | None  # where the jobs' stdout/stderr go; None = the submitting directory
    minimum_jobs: NonNegInt  # adapt bounds: jobs kept running, and at most this many
    maximum_jobs: PosInt


class KubernetesParams(_Block):
    """``cluster.kind: kubernetes``: the Dask Kubernetes operator's KubeCluster (pipeline/cluster_backends.py)."""

    image: str  # a container image with this project installed (pip install .) and its model files
    replicas: PosInt  # worker pods
    namespace: str | None  # None = the kube context's
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?$")]  # the DaskCluster resource
    cpu: str  # per pod, requests = limits (Kubernetes quantities: "1", "500m")
    memory: str  # per pod ("4Gi")


class ClusterParams(_Block):
    # local: a LocalCluster here; address: an existing scheduler (``scheduler``); slurm, kubernetes: see their blocks
    kind: Literal["local", "address", "slurm", "kubernetes"]
    scheduler: str | None  # kind address: the scheduler's address (tcp://host:8786)
    n_workers: PosInt
    threads_per_worker: PosInt
    memory_limit: str
    slurm: SlurmParams
    kubernetes: KubernetesParams

    @model_validator(mode="before")
    @classmethod
    def _address_from_scheduler(cls, data: Any) -> Any:
        # a scheduler address given with kind local means that scheduler, as before cluster.kind existed
        if isinstance(data, dict) and data.get("scheduler") and data.get("kind") == "local":
            return {**data, "kind": "address"}
        return data

    @model_validator(mode="after")
    def _scheduler_matches_kind(self) -> ClusterParams:
        if self.kind == "address" and not self.scheduler:
            raise PydanticCustomError("kind_address", "kind address needs cluster.scheduler (tcp://host:8786)")
        if self.kind in ("slurm", "kubernetes") and self.scheduler:
            raise PydanticCustomError("kind_scheduler", "cluster.scheduler is for kind address only (kind {kind} "
                                      "starts its own scheduler)", {"kind": self.kind})
        return self


class CacheParams(_Block):
    dir: str  # the per-video run cache (pipeline.runcache); relative = inside the project; $WFLWV_CACHE wins
    max_size: str | None  # `python -m pipeline.runcache prune` trims to this (e.g. 50GB), least recently used first


class DemoParams(_Block):
    n_clips: PosInt
    fps: PosInt
    width: Annotated[int, Field(ge=64, multiple_of=2)]
    height: Annotated[int, Field(ge=64, multiple_of=2)]
    clip_frames: PosInt
    lead_frames: NonNegInt
    tail_frames: NonNegInt
    seed: NonNegInt
    n_rolled: NonNegInt
    n_exits: NonNegInt
    real_motion_clips: Annotated[int, Field(ge=0, le=3)]  # windows of a real talking-face video (no geometric truth)


class SourcesParams(_Block):
    list: str
    media: str  # project folder (or file) holding the media behind file: URLs: a DVC dependency of the stage
    easy_ids: str | None
    hard_ids: str | None
    allow_file_urls: bool
    strict: bool
    limit: PosInt | None


class DownloadParams(_Block):
    format: str
    retries: NonNegInt
    sleep_interval: NonNegFloat
    max_sleep_interval: NonNegFloat
    backoff: NonNegFloat
    backoff_max: NonNegFloat
    max_seconds: Annotated[float, Field(gt=0)]
    max_bytes: PosInt
    ratelimit: PosInt | None
    cookiefile: str | None
    allow_file_urls: bool
    timeout: Annotated[float, Field(gt=0)]
    licenses: StrTuple | None
    source_check: Literal["none", "local", "remote"]  # which sources are re-checked before a download is reused
    retry: Literal["failed", "all", "none"]  # which failed sources a run attempts again (pipeline/acquire/retry.py)


class TrimParams(_Block):
    codec: Literal["libx264"]
    crf: Annotated[int, Field(ge=0, le=51)]
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
    seek: bool


class FacesParams(_Block):
    detector: DetectorChain  # a registered detector name, or a fallback chain "a|b|c"
    search_angles: FloatTuple
    detect_max_side: PosInt
    min_score: float | None
    iou_threshold: Fraction
    max_gap: NonNegInt
    max_shift: NonNegFloat
    min_track_frames: PosInt
    main_face: Literal["salient", "longest", "largest", "central"]
    cut_threshold: Annotated[float, Field(gt=0)]
    track_landmarks: LandmarkModelName | None
    landmark_min_confidence: Fraction
    smooth_window: PosInt
    smooth_sigma: NonNegFloat
    smooth_max_shift: NonNegFloat


TTAMode = Literal["none", "mirror", "mirror_jitter"]
#: A known perturbation of the self-checks: box centre shift (dx, dy) × the box sides, side scale, turn (degrees).
JitterBox = Annotated[tuple[Annotated[float, Field(ge=-0.5, le=0.5)], Annotated[float, Field(ge=-0.5, le=0.5)],
                            Annotated[float, Field(gt=0.5, lt=2.0)], Annotated[float, Field(ge=-45, le=45)]],
                      BeforeValidator(_as_tuple)]


def _tta_keys(value: dict[str, TTAMode]) -> dict[str, TTAMode]:
    if "default" not in value:
        raise PydanticCustomError("tta_default", "needs a 'default' entry (the mode of every model not listed)")
    for name in value:
        problem = None if name == "default" else registry.unknown_name(
            name, registry.LANDMARK_MODELS, registry.FIVE_POINT_MODELS)
        if problem:
            raise PydanticCustomError("unknown_name", "{problem}", {"problem": problem})
    return value


class LabelParams(_Block):
    models: Annotated[tuple[LabelModelName, ...], BeforeValidator(_as_tuple)]
    mirror_check: bool  # each model also labels the mirrored crop (mapped back: the mirror self-check)
    jitter_boxes: Annotated[tuple[JitterBox, ...], BeforeValidator(_as_tuple)]  # the box-jitter self-check
    tta: Annotated[dict[str, TTAMode], AfterValidator(_tta_keys)]  # which passes are averaged into a model's label


class ModelsParams(_Block):
    mirror: str | None  # folder holding repository-published model files (<key>/<file>); relative to the project
    # exact: LiteRT reference kernels and ONNX graphs in cv2.dnn, the same labels on every x86-64 CPU; fast: XNNPACK
    # and onnxruntime, whose kernels follow the CPU (pipeline/kernels.py; $WFLWV_DETERMINISM overrides it)
    determinism: Literal["exact", "fast"]


class ScoreParams(_Block):
    n_hard: NonNegInt
    min_families: PosInt
    min_valid_share: Fraction
    min_point_agreement: Fraction
    iod_box: Annotated[FloatTuple, Field(min_length=2, max_length=2)]
    smooth_window: PosInt
    smooth_order: NonNegInt
    offsets: bool
    # a model whose mirror or jitter self-disagreement on a frame exceeds this (inter-ocular units) does not vote there
    max_self_disagreement: Annotated[float, Field(gt=0)]
    bridge_max_gap: NonNegInt  # invalid runs up to this many frames between valid ones take labels carried by the box
    weights: dict[Literal["disagreement", "instability", "self_disagreement", "confidence", "valid_share"],
                  NonNegFloat]


class AnnotateParams(_Block):
    export_dir: str
    corrections: str  # folder of human corrections (`python -m pipeline.review import`); annotate depends on it
    propagate_max_gap: NonNegInt  # corrections are interpolated only between corrected frames this close (frames)


class ReviewParams(_Block):
    export_dir: str  # images, Label Studio tasks and labelling config of `python -m pipeline.review export`
    frames_per_video: NonNegInt  # at most this many uncertain or invalid frames per video, besides the keyframes
    keyframe_step: PosInt  # keyframes spread over each video, at most this many frames apart
    min_gap: NonNegInt  # chosen frames lie at least this many frames apart
    image_url_prefix: str  # task image URL = prefix + the image's path relative to the project root


class TrainParams(_Block):
    profile: str  # an ldeq.config profile name; ``overrides`` replace some of its fields
    overrides: dict[str, Any]
    frame_stride: PosInt
    seed: NonNegInt
    wflw_annotations: str | None  # official list_98pt_rect_attr_train.txt: WFLW stills as a first source
    wflw_images: str | None  # the WFLW_images/ folder those paths are relative to


class EvaluateParams(_Block):
    checkpoint: str | None  # a checkpoint folder or a released .pth.tar; None = the train stage's output
    rwr_iters: PosInt
    max_videos: PosInt | None
    frame0_full_solve: bool
    rwr_align: bool
    rwr_gammas: FloatTuple
    tune_videos: PosInt


class ReportParams(_Block):
    easy_renders: NonNegInt
    render_format: Literal["webp", "gif", "mp4"]
    render_max_side: Annotated[int, Field(ge=64)]
    sheet_frames: NonNegInt


class Params(_Block):
    """The whole file: every block must be present."""

    cluster: ClusterParams
    cache: CacheParams
    demo: DemoParams
    sources: SourcesParams
    download: DownloadParams
    trim: TrimParams
    faces: FacesParams
    label: LabelParams
    models: ModelsParams
    score: ScoreParams
    annotate: AnnotateParams
    review: ReviewParams
    train: TrainParams
    evaluate: EvaluateParams
    report: ReportParams


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at key path ``loc`` (as deep as it exists), for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(path: Path, text: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(x for x in first["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    key = ".".join(str(x) for x in loc) or "(top level)"
    line = _line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    value = f" (got {first['input']!r})" if first["type"] not in ("missing",) and not isinstance(
        first["input"], dict) else ""
    more = f" [and {err.error_count() - 1} more problem(s)]" if err.error_count() > 1 else ""
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].lower()
    return f"{where}: {key}: {message}{value}{more}"


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read the raw params mapping; raise :class:`ParamsError` (one line) if the file is missing or not YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot read params file: {err}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{where}: not valid YAML: {problem}") from None
    if raw is None:
        raise ParamsError(f"{path}: params file is empty")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage blocks, found {type(raw).__name__}")
    return raw


def validate(raw: dict[str, Any], path: str | Path = "params.yaml", text: str | None = None) -> Params:
    """Validate a raw mapping as a whole params file; raise :class:`ParamsError` naming the first bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        source = text if text is not None else yaml.safe_dump(raw, sort_keys=False)
        raise ParamsError(_describe(Path(path), source, err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a whole params file."""
    raw = load(path)
    return validate(raw, path, Path(path).read_text(encoding="utf-8"))


def stage_params(stage: str, path: str | Path = "params.yaml", **overrides: Any) -> Any:
    """Return the validated params block of ``stage`` (``"faces"`` → :class:`FacesParams`).

    ``overrides`` replace values of that block before validation (tests use it: ``stage_params("trim", crf=0)``).
    """
    if stage not in Params.model_fields:
        raise ParamsError(f"unknown params block {stage!r}; known: {sorted(Params.model_fields)}")
    if not overrides:
        return getattr(load_params(path), stage)
    raw = load(path)
    raw[stage] = {**(raw.get(stage) or {}), **overrides}
    return getattr(validate(raw, path), stage)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _sets(overlay: Any, loc: tuple[Any, ...]) -> bool:
    """Whether ``overlay`` holds the value at key path ``loc`` (so a problem there is the overlay's)."""
    for key in loc:
        if isinstance(overlay, dict) and key in overlay:
            overlay = overlay[key]
        elif isinstance(overlay, list) and isinstance(key, int) and key < len(overlay):
            overlay = overlay[key]
        else:
            return False
    return True


def _merge_into(document: Any, overlay: dict[str, Any]) -> None:
    """:func:`merge` in place, on a ruamel round-trip document: what the overlay does not set keeps its comments."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            _merge_into(document[key], value)
        else:
            document[key] = value


def apply_profile(params: Path, profile: Path) -> None:
    """Merge ``profile`` into ``params`` and rewrite it (comments and layout kept) if the result is valid.

    A problem is reported at its own file and line: the profile's where the profile sets the key, else the params
    file's.
    """
    import io

    from ruamel.yaml import YAML

    from pipeline.manifest import atomic_path

    base, overlay = load(params), load(profile)
    merged = merge(base, overlay)
    try:
        Params.model_validate(merged)
    except ValidationError as err:
        loc = tuple(x for x in err.errors()[0]["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        blamed = profile if _sets(overlay, loc) else params
        raise ParamsError(_describe(blamed, blamed.read_text(encoding="utf-8"), err)) from None
    round_trip = YAML()  # keeps comments, key order, quotes and flow lists of what the profile leaves alone
    round_trip.preserve_quotes = True
    round_trip.width = 4096  # never fold a long value onto a second line
    round_trip.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = round_trip.load(params.read_text(encoding="utf-8"))
    _merge_into(document, round_trip.load(profile.read_text(encoding="utf-8")))
    text = io.StringIO()
    round_trip.dump(document, text)
    written = yaml.safe_load(text.getvalue())
    if written != merged:  # ruamel reads YAML 1.2, PyYAML 1.1: a few unquoted scalars (yes/no, 0o10) differ
        key = next(k for k in merged if written.get(k) != merged[k])
        raise ParamsError(f"{params}: {key}: the rewritten file would read differently from the merged values; "
                          f"quote ambiguous scalars (yes/no, octal numbers) in {profile} or {params}")
    with atomic_path(params) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply a profile overlay to params.yaml, or check params.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    apply = sub.add_parser("apply", help="merge a profile into params.yaml (written only if the result is valid)")
    apply.add_argument("profile", type=Path)
    apply.add_argument("--params", type=Path, default=Path("params.yaml"))
    check = sub.add_parser("check", help="validate every stage block")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "apply":
            apply_profile(args.params, args.profile)
        load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.params}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
