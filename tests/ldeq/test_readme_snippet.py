"""The README's `ldeq` snippet runs and says what it does: input size, output shape and range, parameter count."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ldeq.config import get_config
from ldeq.model import LDEQ

ROOT = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"`ldeq` alone[^\n]*\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md: no ```python block after '`ldeq` alone'"
    return match.group(1)


def test_the_readme_ldeq_snippet_runs_and_its_comments_hold():
    """Run verbatim except for the profile: the paper model's solve takes 10-20 s per crop on a shared CPU, so the
    snippet runs with the ``tiny`` profile (same code path) and the paper-only claims are checked on the paper
    model itself."""
    code = readme_snippet()
    assert 'get_config("paper")' in code
    scope: dict = {}
    exec(compile(code.replace('get_config("paper")', 'get_config("tiny")'), "README.md", "exec"), scope)  # noqa: S102
    cfg = scope["cfg"]
    assert scope["x"].shape == (3, cfg.input_size, cfg.input_size) and scope["x"].dtype == np.float32
    landmarks = scope["out"].landmarks
    assert landmarks.shape == (1, 98, 2) and bool(((landmarks >= 0) & (landmarks < 1)).all())
    assert scope["points"].shape == (98, 2)
    box = scope["box"]  # the crop is the box enlarged 1.2×: every crop point maps inside it, enlarged
    side = 1.2 * max(box[2] - box[0], box[3] - box[1])
    centre = (box[:2] + box[2:]) / 2
    assert np.all(np.abs(scope["points"] - centre) <= side / 2 + 1)
    paper = get_config("paper")
    assert paper.input_size == 256 and "(3, 256, 256)" in code and "(B, 3, 256, 256)" in code
    stated = int(re.search(r"([\d,]+) parameters", code).group(1).replace(",", ""))
    assert sum(p.numel() for p in LDEQ(paper).parameters()) == stated
