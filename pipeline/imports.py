"""Which project files a stage runs: the import closure of its module, for complete DVC dependencies.

A DVC stage re-runs only when one of its ``deps`` changes, so every project module a stage imports (directly, lazily
inside a function, or through another module) must be covered by a dep, or ``dvc repro`` serves stale results.
``python -m pipeline.imports`` prints, per stage of ``dvc.yaml``, the files its deps miss; the test suite asserts that
the list is empty.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

__all__ = ["PROJECT_PACKAGES", "module_file", "module_name", "import_closure", "external_imports", "stage_modules",
           "uncovered", "stale", "write_deps"]

PROJECT_PACKAGES = ("pipeline", "stages", "ldeq")
_DOTTED = re.compile(r"(?:pipeline|stages|ldeq)(?:\.[A-Za-z_]\w*)+")
ROOT = Path(__file__).resolve().parent.parent


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of project module ``module`` (``a.b`` → ``a/b.py`` or ``a/b/__init__.py``), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports anywhere in its body (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # ``from pkg import mod`` imports the submodule when it is one
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            found.add(node.value)  # a module imported by name at run time (importlib.import_module("pipeline.x"))
    return found


def import_closure(module: str, root: Path = ROOT) -> set[Path]:
    """Project files executed when ``module`` is imported: its file, parents' ``__init__``s and all imports."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            todo.append(".".join(parts[:i]))
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path.relative_to(root))
        todo.extend(_imported_modules(path, name))
    return files


def module_name(rel: Path) -> str:
    """The dotted name of the project module in file ``rel`` (``a/b/__init__.py`` → ``a.b``)."""
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def external_imports(module: str, root: Path = ROOT) -> set[str]:
    """Top-level names of the third-party modules that the files of ``module``'s closure import anywhere in their
    body (function-level imports included): what the run cache's key takes package versions of."""
    names: set[str] = set()
    for rel in import_closure(module, root):
        names.update(name.split(".")[0] for name in _imported_modules(root / rel, module_name(rel)))
    return {name for name in names
            if name and name not in PROJECT_PACKAGES and name not in sys.stdlib_module_names and name != "__future__"}


def stage_modules(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """``{stage: (module run by its cmd, deps)}`` for every ``python -m`` stage of ``dvc.yaml``."""
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    out = {}
    for name, stage in spec["stages"].items():
        words = stage["cmd"].split()
        if "-m" in words:
            out[name] = (words[words.index("-m") + 1], [str(d) for d in stage.get("deps", [])])
    return out


def uncovered(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Per stage, the imported project files that none of its deps (a file or a folder above it) covers."""
    missing = {}
    for stage, (module, deps) in stage_modules(dvc_yaml).items():
        dep_paths = [Path(d.rstrip("/")) for d in deps]
        files = import_closure(module, dvc_yaml.parent)
        gaps = sorted(str(f) for f in files if not any(f == d or d in f.parents for d in dep_paths))
        if gaps:
            missing[stage] = gaps
    return missing


def _is_code(dep: str) -> bool:
    """A module or package folder of the project (other files inside packages, e.g. JSON, are data deps)."""
    return dep.split("/")[0] in PROJECT_PACKAGES and (dep.endswith(".py") or "." not in dep.rsplit("/", 1)[-1])


def stale(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Per stage, code deps that do not exist (a renamed module) — DVC refuses to run such a stage."""
    gaps = {}
    for stage, (_, deps) in stage_modules(dvc_yaml).items():
        missing = [d for d in deps if _is_code(d) and not (dvc_yaml.parent / d).exists()]
        if missing:
            gaps[stage] = missing
    return gaps


def write_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> None:
    """Rewrite each stage's code deps as exactly its import closure (data deps are kept, in order, first)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    rt.indent(mapping=2, sequence=4, offset=2)
    spec = rt.load(dvc_yaml)
    for stage, (module, _) in stage_modules(dvc_yaml).items():
        deps = spec["stages"][stage]["deps"]
        data = [d for d in deps if not _is_code(str(d))]
        code = sorted(str(f) for f in import_closure(module, dvc_yaml.parent))
        deps.clear()
        deps.extend(code + data)
    rt.dump(spec, dvc_yaml)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List project files that a dvc.yaml stage imports but does not "
                                                 "depend on.")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    parser.add_argument("--write", action="store_true", help="rewrite every stage's code deps as its import closure")
    args = parser.parse_args(argv)
    if args.write:
        write_deps(args.dvc_yaml)
    gaps = uncovered(args.dvc_yaml)
    for stage, files in gaps.items():
        print(f"{args.dvc_yaml}: stage {stage}: deps miss {', '.join(files)}")
    for stage, files in stale(args.dvc_yaml).items():
        print(f"{args.dvc_yaml}: stage {stage}: deps do not exist: {', '.join(files)}")
        gaps[stage] = files
    if not gaps:
        print(f"{args.dvc_yaml}: every stage's deps cover its imports")
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
