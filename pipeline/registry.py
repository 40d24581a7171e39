"""The names each model registry accepts, read without importing the registry, for checking params when they load.

A registry is a module-level dict literal keyed by name (``DETECTORS`` in ``pipeline/faces/detectors/registry.py``,
``LANDMARK_MODELS`` in ``pipeline/landmarks/adapters.py``, ...); that dict stays the only list of names. The keys are
read from the module's source because importing it would pull in OpenCV or onnxruntime on every params load, and
would put every model backend into every stage's DVC dependencies (``pipeline.imports`` follows imports): whether a
name exists decides if a run may start, not what it computes.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["Registry", "DETECTORS", "LANDMARK_MODELS", "FIVE_POINT_MODELS", "unknown_name"]

_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Registry:
    """Where one registry's dict lives: ``table`` in ``path`` (relative to the ``pipeline`` package)."""

    kind: str
    path: str
    table: str

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return _dict_keys(_PACKAGE / self.path, self.table)


@cache
def _dict_keys(path: Path, table: str) -> tuple[str, ...]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == table for t in targets) and isinstance(value, ast.Dict):
            keys = [k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(keys) == len(value.keys):  # a ``**other`` entry has no key: not a plain list of names
                return tuple(sorted(keys))
    raise LookupError(f"{path}: no dict literal {table} = {{'name': ..., ...}} with string keys")


def unknown_name(name: str, *registries: Registry, where: str = "") -> str | None:
    """None if ``name`` is registered in one of ``registries``, else a message with the closest match and the list
    (``where`` is inserted after the name, e.g. ``" in the chain"``)."""
    known = sorted({n for r in registries for n in r.names()})
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {' or '.join(r.kind for r in registries)} {name!r}{where} ({hint}known: {', '.join(known)})"


DETECTORS = Registry("face detector", "faces/detectors/registry.py", "DETECTORS")
LANDMARK_MODELS = Registry("landmark model", "landmarks/adapters.py", "LANDMARK_MODELS")
FIVE_POINT_MODELS = Registry("five-point model", "landmarks/fivepoint.py", "FIVE_POINT_MODELS")
