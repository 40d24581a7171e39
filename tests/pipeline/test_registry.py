"""pipeline.registry: the names params accept are exactly the keys of the registries the stages build from."""

from __future__ import annotations

import pytest

from pipeline import registry


def test_names_read_from_source_are_the_registries_keys():
    from pipeline.faces.detectors.registry import DETECTORS
    from pipeline.landmarks.adapters import LANDMARK_MODELS
    from pipeline.landmarks.fivepoint import FIVE_POINT_MODELS

    assert registry.DETECTORS.names() == tuple(sorted(DETECTORS))
    assert registry.LANDMARK_MODELS.names() == tuple(sorted(LANDMARK_MODELS))
    assert registry.FIVE_POINT_MODELS.names() == tuple(sorted(FIVE_POINT_MODELS))


def test_unknown_names_get_the_closest_match_and_the_list():
    assert registry.unknown_name("dlib_hog", registry.DETECTORS) is None
    assert registry.unknown_name("retinaface_5", registry.LANDMARK_MODELS, registry.FIVE_POINT_MODELS) is None
    message = registry.unknown_name("dlib68", registry.LANDMARK_MODELS)
    assert message is not None and message.startswith("unknown landmark model 'dlib68' (did you mean 'dlib_68'? ")
    assert registry.unknown_name("zzz", registry.DETECTORS) == (
        f"unknown face detector 'zzz' (known: {', '.join(registry.DETECTORS.names())})")


def test_a_registry_that_is_not_a_dict_literal_is_named(tmp_path):
    (tmp_path / "reg.py").write_text("TABLE = dict(a=1)\n")
    with pytest.raises(LookupError, match="no dict literal TABLE"):
        registry.Registry("thing", str(tmp_path / "reg.py"), "TABLE").names()
