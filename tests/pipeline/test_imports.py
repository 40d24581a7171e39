"""DVC deps by construction: every project file a stage imports is covered by one of its deps."""

import textwrap

from pipeline.imports import ROOT, import_closure, stale, uncovered


def test_every_stage_depends_on_everything_it_imports():
    assert uncovered(ROOT / "dvc.yaml") == {}  # fix with: python -m pipeline.imports --write
    assert stale(ROOT / "dvc.yaml") == {}


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    pkg = tmp_path / "pipeline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import deep\n")
    (pkg / "sub" / "deep.py").write_text("")
    (pkg / "lazy.py").write_text("X = 1\n")
    (pkg / "unused.py").write_text("")
    (pkg / "byname.py").write_text("")
    (pkg / "main.py").write_text(textwrap.dedent("""
        import importlib
        import os
        from pipeline import sub

        BACKEND = importlib.import_module("pipeline.byname")  # imported by name: still a dependency

        def run():
            from .lazy import X  # imported only when run() is called: still a dependency
            return X
    """))
    files = {str(f) for f in import_closure("pipeline.main", tmp_path)}
    assert files == {"pipeline/__init__.py", "pipeline/main.py", "pipeline/sub/__init__.py",
                     "pipeline/sub/deep.py", "pipeline/lazy.py", "pipeline/byname.py"}


def test_a_missing_dep_is_reported(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "stages" / "a.py").write_text("from pipeline.b import f\n")
    (tmp_path / "pipeline" / "b.py").write_text("def f():\n    from pipeline import c\n")
    (tmp_path / "pipeline" / "c.py").write_text("")
    dvc = tmp_path / "dvc.yaml"
    head = "stages:\n  a:\n    cmd: python -m stages.a\n    deps:\n"
    dvc.write_text(head + "      - stages/a.py\n      - pipeline/b.py\n")
    assert uncovered(dvc) == {"a": ["pipeline/c.py"]}
    dvc.write_text(head + "      - stages\n      - pipeline\n")
    assert uncovered(dvc) == {}


def test_the_faces_and_ldeq_packages_import_no_module_that_imports_them_back():
    """faces ← landmarks only (the follower's model comes from the caller); ldeq.deq does not import ldeq.model."""
    faces = {str(f) for f in import_closure("pipeline.faces.process")}
    assert not [f for f in faces if f.startswith("pipeline/landmarks/")]
    assert "ldeq/model.py" not in {str(f) for f in import_closure("ldeq.deq")}
