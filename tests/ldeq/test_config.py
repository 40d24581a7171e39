import json

import pytest

from ldeq.config import LDEQConfig, get_config


def test_config_json_roundtrip(tmp_path):
    cfg = get_config("demo", epochs=3)
    cfg.to_json(tmp_path / "c.json")
    assert LDEQConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(KeyError):
        get_config("nope")


def test_a_config_written_before_the_crop_keys_gets_the_released_convention(tmp_path):
    path = tmp_path / "config.json"
    get_config("tiny", crop_scale=1.5, mean=[0.0, 0.0, 0.0]).to_json(path)
    values = json.loads(path.read_text())
    for key in ("crop_scale", "mean", "std"):
        values.pop(key)
    path.write_text(json.dumps(values))
    cfg = LDEQConfig.from_json(path)
    assert (cfg.crop_scale, cfg.mean, cfg.std) == (1.2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert cfg.input_size == get_config("tiny").input_size
