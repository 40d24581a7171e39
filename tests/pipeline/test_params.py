"""Typed params: one source (params.yaml), strict types, unknown keys refused, one-line errors naming file and key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.params import PROJECT_PARAMS, ParamsError, load_params, main, merge, stage_params

ROOT = Path(__file__).resolve().parents[2]


def write_params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(PROJECT_PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_project_params_are_valid_and_complete():
    params = load_params(PROJECT_PARAMS)
    assert params.faces.max_gap == yaml.safe_load(PROJECT_PARAMS.read_text())["faces"]["max_gap"]
    assert params.train.wflw_annotations is None  # once code-only, now a value in params.yaml
    assert isinstance(params.label.models, tuple)


def test_quoted_bool_is_refused_with_file_line_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PROJECT_PARAMS.read_text().replace("allow_file_urls: true    # the demo's",
                                                       "allow_file_urls: 'false'    # the demo's"))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "'false'" in t)
    with pytest.raises(ParamsError) as err:
        stage_params("sources", path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: sources.allow_file_urls: ")
    assert "'false'" in message and "\n" not in message


def test_unknown_key_and_missing_key_are_named(tmp_path):
    path = write_params(tmp_path, lambda raw: raw["faces"].update(max_gapp=3))
    with pytest.raises(ParamsError, match=r"faces\.max_gapp: unknown key"):
        stage_params("faces", path)
    path = write_params(tmp_path, lambda raw: raw["trim"].pop("crf"))
    with pytest.raises(ParamsError, match=r"trim\.crf: field required"):
        stage_params("trim", path)


def test_constraints_are_checked(tmp_path):
    path = write_params(tmp_path, lambda raw: raw["sources"].update(limit=0))
    with pytest.raises(ParamsError, match=r"sources\.limit: .*greater than 0"):
        stage_params("sources", path)
    with pytest.raises(ParamsError, match=r"trim\.crf: .*less than or equal to 51"):
        stage_params("trim", PROJECT_PARAMS, crf=99)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("faces:\n  max_gap: [1,\n")
    with pytest.raises(ParamsError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_params(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("demo:\n  seed: 0 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="cannot read params file"):
        load_params(latin)


def test_overrides_are_validated_like_the_file():
    assert stage_params("trim", PROJECT_PARAMS, crf=0).crf == 0
    with pytest.raises(ParamsError, match=r"download\.retries"):
        stage_params("download", PROJECT_PARAMS, retries="3")


def test_merge_is_deep():
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "b": 1}


def test_apply_profile_writes_only_valid_results(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PROJECT_PARAMS.read_text())
    assert main(["apply", str(ROOT / "profiles" / "tiny.yaml"), "--params", str(params)]) == 0
    assert load_params(params).score.n_hard == yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())[
        "score"]["n_hard"]
    before = params.read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text("faces:\n  max_gap: -1\n")
    assert main(["apply", str(broken), "--params", str(params)]) == 2
    assert params.read_text() == before  # a profile that breaks validation is not written
    assert "faces.max_gap" in capsys.readouterr().err


def test_apply_names_the_profiles_own_line_or_the_params_files(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PROJECT_PARAMS.read_text())
    profile = tmp_path / "bad_profile.yaml"
    profile.write_text("score:\n  n_hard: 3\nfaces:\n  max_gap: -1\n")
    assert main(["apply", str(profile), "--params", str(params)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {profile}:4: faces.max_gap: input should be greater than")
    params.write_text(PROJECT_PARAMS.read_text().replace("  crf: ", "  crf: -", 1))  # a fault the profile leaves
    assert main(["apply", str(profile), "--params", str(params)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {params}:{_line(params, 'crf: -')}: trim.crf: ")


def test_apply_keeps_the_comments_and_layout_of_params_yaml(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PROJECT_PARAMS.read_text())
    before = params.read_text().splitlines()
    profile = ROOT / "profiles" / "wflw_v.yaml"
    assert main(["apply", str(profile), "--params", str(params)]) == 0
    after = params.read_text().splitlines()
    assert yaml.safe_load(params.read_text()) == merge(yaml.safe_load(PROJECT_PARAMS.read_text()),
                                                       yaml.safe_load(profile.read_text()))
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed and all(a.split(":")[0] == b.split(":")[0] for a, b in changed)  # only values changed
    assert all(a.partition(" # ")[2].strip() == b.partition(" # ")[2].strip() or "#" not in a for a, b in changed)
    assert [line for line in before if line.lstrip().startswith("#")] == [
        line for line in after if line.lstrip().startswith("#")]


@pytest.mark.parametrize("stage", ["sources", "faces", "score"])
def test_stage_cli_reports_bad_params_in_one_line(tmp_path, stage):
    path = write_params(tmp_path, lambda raw: raw[stage].update(surprise=1))
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", str(path)], cwd=ROOT,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {path}:{_line(path, 'surprise')}: {stage}.surprise: unknown key (got 1)"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("block, key, value, message", [
    ("faces", "detector", "retina_face", "unknown face detector 'retina_face' (did you mean 'retinaface'? known: "),
    ("faces", "detector", "retinaface|blazeface_ful|dlib_hog",
     "unknown face detector 'blazeface_ful' in the chain (did you mean 'blazeface_full'? known: "),
    ("faces", "detector", "retinaface||dlib_hog", "unknown face detector '' in the chain (known: "),
    ("faces", "track_landmarks", "mediapipe_mesh", "unknown landmark model 'mediapipe_mesh' (did you mean "),
    ("label", "models", ["dlib_68", "retinaface_5", "mediapipe_mesh_v3"],
     "unknown landmark model or five-point model 'mediapipe_mesh_v3' (did you mean 'mediapipe_mesh_v2'? known: "),
], ids=["detector", "chain_member", "empty_chain_member", "follower", "label_model"])
def test_unknown_model_names_are_refused_when_params_load(tmp_path, block, key, value, message):
    path = write_params(tmp_path, lambda raw: raw[block].update({key: value}))
    bad = value[-1] if isinstance(value, list) else value
    loc = f"{block}.{key}.{len(value) - 1}" if isinstance(value, list) else f"{block}.{key}"
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}:{_line(path, bad)}: {loc}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_registered_names_pass_and_loading_params_imports_no_model_code(tmp_path):
    path = write_params(tmp_path, lambda raw: raw["faces"].update(detector="scrfd | dlib_hog", track_landmarks=None))
    assert load_params(path).faces.detector == "scrfd | dlib_hog"
    heavy = ["cv2", "torch", "onnxruntime", "ai_edge_litert", "dlib", "insightface"]
    code = (f"import sys; from pipeline.params import load_params; load_params({str(PROJECT_PARAMS)!r}); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-2000:]


def test_a_stage_given_an_unknown_detector_stops_before_any_work(tmp_path):
    path = write_params(tmp_path, lambda raw: raw["faces"].update(detector="retina_face"))
    result = subprocess.run([sys.executable, "-m", "stages.faces", "--params", str(path)], cwd=ROOT,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:{_line(path, 'retina_face')}: faces.detector: unknown face detector "
                           "'retina_face' (did you mean 'retinaface'? known: ")


def _line(path: Path, text: str) -> int:
    return next(i for i, t in enumerate(path.read_text().splitlines(), 1) if text in t)
