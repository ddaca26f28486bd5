"""Imports go one way: no cycle between ldmkit's subpackages, pipelines do not read the training data,
training code does not build pipelines.

Every import statement of every module is read with `ast`, function-local ones included, so an import
moved into a function cannot hide a cycle. A module belongs to its subpackage (``ldmkit.model`` and
``ldmkit.convert.meta`` are the nodes ``ldmkit.model`` and ``ldmkit.convert``); the root package
``ldmkit`` is a node of its own.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ldmkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, str | None]]:
    """(imported module, line, imported name or None) for every import statement of ``path``; a relative
    import is resolved against the module's package."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(base, node.lineno, alias.name) for alias in node.names]
    return found


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def import_graph() -> dict[str, dict[str, str]]:
    """subpackage → {imported subpackage: "file:line" of one import that makes the edge}."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = subpackage(module_name(path))
        for target, line, _ in imports(path):
            if target.split(".")[0] == "ldmkit" and subpackage(target) != source:
                graph[source].setdefault(subpackage(target), f"{path.relative_to(ROOT)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first = last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}}) is None


def test_no_cycle_between_subpackages():
    graph = import_graph()
    assert "ldmkit.model" in graph and "ldmkit.convert" in graph["ldmkit.model"]  # the graph is read at all
    cycle = find_cycle(graph)
    if cycle:
        edges = [f"{a} → {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between ldmkit subpackages:\n  " + "\n  ".join(edges))


def test_pipelines_do_not_import_the_shapes_data():
    for path in sorted((PACKAGE / "pipelines").rglob("*.py")):
        for target, line, name in imports(path):
            assert not (target == "ldmkit.data.shapes" or target.startswith("ldmkit.data.shapes.")
                        or (target == "ldmkit.data" and name == "shapes")), f"{path.relative_to(ROOT)}:{line}"
    # nor through a package's __init__: importing the pipelines loads no training data module
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ldmkit.pipelines; print(*sorted(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert [m for m in loaded if m.startswith("ldmkit.data")] == []


def test_training_builds_no_pipeline():
    """train/ draws its sample grids through `ldmkit.pipelines.preview_samples` only."""
    for path in sorted((PACKAGE / "train").rglob("*.py")):
        for target, line, name in imports(path):
            if target.startswith("ldmkit.pipelines"):
                assert (target, name) == ("ldmkit.pipelines", "preview_samples"), f"{path.relative_to(ROOT)}:{line}"


# Function-local imports are for optional packages only (and for what needs them), so that a module's
# dependencies are read at its top. The exceptions are listed with their reason.
OPTIONAL = ("uvicorn", "fastapi", "webdataset", "braceexpand", "torch.utils.tensorboard", "transformers", "diffusers",
            "ldmkit.serve")  # ldmkit.serve needs fastapi
EXCEPTIONS = {
    ("ldmkit/__init__.py", "ldmkit.pipelines.text_to_image"),  # `import ldmkit` stays cheap: no torch
    ("ldmkit/serve/edit.py", "ldmkit.pipelines.prompt_to_prompt"),  # ldmkit/serve/ is being reworked
    ("ldmkit/serve/edit.py", "ldmkit.diffusion.prompt_to_prompt"),
    ("ldmkit/train/distributed.py", "torch._dynamo"),  # 1 s to import: only where a process group starts
}


def local_imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(alias.name, node.lineno) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found.append(("." * node.level + (node.module or ""), node.lineno))
    return found


def test_function_local_imports_are_for_optional_packages():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for module, line in local_imports(path):
            optional = any(module == o or module.startswith(o + ".") for o in OPTIONAL)
            if not optional and (where, module) not in EXCEPTIONS:
                wrong.append(f"{where}:{line} imports {module}")
    assert not wrong, "import these at the top of the module:\n  " + "\n  ".join(sorted(set(wrong)))
