"""Tests test the library: no test imports a script of benchmarks/ or experiments/ or names a path there.
The maintained benchmarks and the finished experiments are scripts run by hand; what a test needs from one
of them is library code (e.g. `ldmkit.eval.tables`), tested here where it lives."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FOLDERS = ("benchmarks", "experiments")
_PATH = re.compile(r"(^|[/\\])(" + "|".join(FOLDERS) + r")($|[/\\])")


def script_modules() -> set[str]:
    """The names a test could import those scripts by (the folders as packages, or each script's file name
    after a ``sys.path`` insert)."""
    return set(FOLDERS) | {p.stem for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}


def reaches_into_scripts(source: str, modules: set[str]) -> list[str]:
    """What in ``source`` imports from benchmarks/ or experiments/: an ``import``, an ``import_module`` or
    ``__import__`` of one of ``modules``, or a string (docstrings aside) with one of the folders as a path
    component, as a ``spec_from_file_location`` or ``sys.path`` insert would need. One "line N: …" each."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names = [node.args[0].value]
        found += [(node.lineno, f"imports {name}") for name in names if name.split(".")[0] in modules]
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and _PATH.search(node.value)):
            found.append((node.lineno, f"a path into {_PATH.search(node.value)[2]}/: {node.value!r}"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_no_test_imports_from_benchmarks_or_experiments():
    modules = script_modules()
    offenders = {path.relative_to(ROOT).as_posix(): found for path in sorted(TESTS.rglob("*.py"))
                 if path.resolve() != Path(__file__).resolve()
                 and (found := reaches_into_scripts(path.read_text(encoding="utf-8"), modules))}
    assert not offenders, offenders


def test_the_check_finds_each_way_in():
    bad = '''"""Checks benchmarks/generation.py (a docstring may say so)."""
import importlib.util, sys
from pathlib import Path
import experiments.two_objects
from _bench_common import markdown_table
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
spec = importlib.util.spec_from_file_location("tune", "experiments/binding/tune.py")
retrace = importlib.import_module("retrace")
'''
    found = reaches_into_scripts(bad, script_modules() | {"_bench_common", "retrace"})
    assert [line.split(":")[0] for line in found] == ["line 4", "line 5", "line 6", "line 7", "line 8"], found
    assert reaches_into_scripts('import ldmkit.eval.tables\nx = "my benchmarks are fast"\n', script_modules()) == []
