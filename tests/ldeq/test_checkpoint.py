import argparse
import json

import pytest
import torch

from ldeq.checkpoint import (
    CheckpointError,
    legacy_to_current,
    load_checkpoint,
    load_official_state_dict,
    official_config,
    save_training_state,
)
from ldeq.config import get_config
from ldeq.model import LDEQ
from tests.ldeq.released_reference import official_shapes, official_state_dict, released_args, to_legacy

SMALL = dict(input_size=64, injection_width=16, width_increment=8, hourglass_levels=4)


def save_released(path, state, args=None):
    """A file laid out like the released ``final.pth.tar``."""
    torch.save({"state_dict": state, "args": args or argparse.Namespace(beta=0.3), "epoch": 60}, path)
    return path


def test_released_state_dict_loads_strictly_with_weights_only(tmp_path):
    state = official_state_dict(official_shapes(98, 264, 24))
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 21_825_146
    path = save_released(tmp_path / "final.pth.tar", state)
    model = LDEQ(get_config("paper"))
    load_official_state_dict(model, path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_missing_key_is_one_error_naming_file_and_key(tmp_path):
    state = official_state_dict(official_shapes(98, 16, 8))
    del state["deq_layer.cell.head.conv.bias"]
    path = save_released(tmp_path / "final.pth.tar", state)
    with pytest.raises(CheckpointError) as err:
        load_official_state_dict(LDEQ(get_config("tiny", **SMALL)), path)
    assert isinstance(err.value, KeyError)
    assert str(err.value) == f"{path}: key 'deq_layer.cell.head.conv.bias' missing from the checkpoint"


def test_a_wrong_shape_is_the_same_error_naming_file_key_and_shapes(tmp_path):
    """The issue's case: a layer at another hourglass level under the same name (before, a RuntimeError)."""
    state = official_state_dict(official_shapes(98, 16, 8))
    key = "deq_layer.cell.hourglass.downchan1.conv.weight"
    state[key] = torch.zeros(16, 24, 3, 3)
    path = save_released(tmp_path / "final.pth.tar", state)
    with pytest.raises(CheckpointError) as err:
        load_official_state_dict(LDEQ(get_config("tiny", **SMALL)), path)
    assert str(err.value) == (f"{path}: key '{key}' has shape [16, 24, 3, 3] in the checkpoint, [40, 48, 3, 3] "
                              "in the model")


def test_an_unexpected_key_and_several_problems_are_counted(tmp_path):
    state = official_state_dict(official_shapes(98, 16, 8))
    state["deq_layer.cell.norm.beta"] = torch.ones(1)
    path = save_released(tmp_path / "a.pth.tar", state)
    with pytest.raises(CheckpointError, match=r"a\.pth\.tar: unexpected key 'deq_layer\.cell\.norm\.beta'"):
        load_official_state_dict(LDEQ(get_config("tiny", **SMALL)), path)
    del state["tail.0.conv.bias"]
    save_released(path, state)
    with pytest.raises(CheckpointError, match=r"key 'tail\.0\.conv\.bias' missing from the checkpoint \(1 more"):
        load_official_state_dict(LDEQ(get_config("tiny", **SMALL)), path)


def test_an_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "final.pth.tar"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: not a loadable checkpoint") and "\n" not in str(err.value)


def test_released_solver_settings_come_from_the_checkpoint_args():
    """The released test scripts rebuild the solver from ``args``: the WFLW weights use Anderson (m 6, λ 1e-4,
    5 iterations, relative stop, extra step), the WFLW-V weights fpi."""
    wflw = official_config(released_args(264, 24, solver="anderson", max_iters=5, tol=1e-4))
    paper = get_config("paper")
    for field in ("num_landmarks", "input_size", "injection_width", "width_increment", "hourglass_levels", "groups",
                  "beta", "solver", "max_iters", "tol", "anderson_m", "anderson_lam", "anderson_mixing",
                  "extra_step"):
        assert getattr(wflw, field) == getattr(paper, field), field
    wflw_v = official_config(released_args(264, 24, solver="fpi", beta=0.4, tol=5e-4))
    assert (wflw_v.solver, wflw_v.beta, wflw_v.tol, wflw_v.extra_step) == ("fpi", 0.4, 5e-4, True)
    assert not official_config(released_args(264, 24, take_one_less_inference_step=True)).extra_step


@pytest.mark.parametrize(("key", "value"), [("stop_mode", "abs"), ("solver", "broyden"), ("z_width", 100),
                                            ("cell_learn_softargmax_beta", True), ("model_mode", "explicit")])
def test_unsupported_released_settings_name_the_key(key, value):
    with pytest.raises(CheckpointError, match=rf"final\.pth\.tar: key 'args\.{key}' is"):
        official_config(released_args(264, 24, **{key: value}), "final.pth.tar")


def test_a_released_file_loads_as_a_model_with_its_config(tmp_path):
    state = official_state_dict(official_shapes(98, 16, 8))
    path = save_released(tmp_path / "final.pth.tar", state, released_args(16, 8, solver="fpi", im_size=64,
                                                                        heatmap_size=16))
    model = load_checkpoint(path)
    assert not model.training
    assert model.cfg == get_config("paper").replace(**SMALL, solver="fpi")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    torch.save({"state_dict": state}, tmp_path / "bare.pth.tar")
    with pytest.raises(CheckpointError, match=r"bare\.pth\.tar: key 'args' missing"):
        load_checkpoint(tmp_path / "bare.pth.tar")


def test_own_checkpoint_folder_carries_the_crop_convention(tmp_path):
    cfg = get_config("tiny", crop_scale=1.3, mean=[0.5, 0.5, 0.5])
    torch.manual_seed(0)
    source = LDEQ(cfg)
    cfg.to_json(tmp_path / "config.json")
    save_training_state(tmp_path / "checkpoint.pt", {"model": source.state_dict(), "epoch": 1})
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["crop_scale"], written["mean"], written["std"]) == (1.3, [0.5, 0.5, 0.5], [0.229, 0.224, 0.225])
    for where in (tmp_path, tmp_path / "checkpoint.pt"):
        model = load_checkpoint(where)
        assert model.cfg == cfg and not model.training
        assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_a_legacy_checkpoint_folder_loads_converted(tmp_path):
    """Folders trained before the renaming (no ``layout`` key) still evaluate, with the same weights."""
    cfg = get_config("tiny")
    torch.manual_seed(0)
    current = LDEQ(cfg)
    cfg.to_json(tmp_path / "config.json")
    legacy = to_legacy(current.state_dict(), cfg.hourglass_levels)
    torch.save({"model": legacy, "epoch": 1}, tmp_path / "checkpoint.pt")
    model = load_checkpoint(tmp_path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in current.state_dict().items())
    assert legacy_to_current(legacy, cfg.hourglass_levels).keys() == current.state_dict().keys()


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tmp_path / "nowhere")
    assert err.value.filename == str(tmp_path / "nowhere")


def test_the_same_training_state_is_the_same_file(tmp_path):
    """torch.save writes a random serialization id; DVC hashes checkpoints, so it is made a hash of the content."""
    import zipfile

    import torch

    from ldeq.checkpoint import save_training_state

    state = {"model": {"w": torch.arange(12.0).reshape(3, 4)}, "epoch": 2, "history": [{"epoch": 1, "loss": 0.5}]}
    paths = [tmp_path / name / "checkpoint.pt" for name in ("a", "b")]
    for path in paths:
        path.parent.mkdir()
        save_training_state(path, state)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert zipfile.ZipFile(paths[0]).testzip() is None  # every CRC still right
    loaded = torch.load(paths[0], weights_only=True)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 2
    save_training_state(paths[1], {**state, "epoch": 3})
    assert paths[0].read_bytes() != paths[1].read_bytes()
