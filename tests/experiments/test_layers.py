"""The experiments package keeps its layers: no upward import, no circle, no private name
used outside its file (read from the source, imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "torchstn" / "experiments"

#: Bottom to top: a module may import its own layer and those below, never above.
LAYERS = [
    {"_files", "options", "optim", "schedules", "checkpoint"},  # small shared pieces
    {"data", "models", "plots", "zoom"},  # what tasks are made of
    {"tasks"},  # each task, and the base class with its registry
    {"config"},  # a run's configuration (reads the tasks' config classes)
    {"engine"},  # the training loop: knows the Task interface, no task
    {"reports"},  # reproduce, tables, the demo
    {"cli", "__main__"},  # the command line
]


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"module {module!r} is in no layer: add it to LAYERS")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, is_package: bool, source: str, modules: set[str]):
    """``(target module, imported names, line)`` of every relative import in ``source``."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = [p for p in package if p]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
        names = [a.name for a in node.names]
        # `from . import sub`: the submodule is what is imported.
        subs = [f"{target}.{n}" if target else n for n in names]
        if all(s in modules for s in subs):
            for s in subs:
                yield s, [], node.lineno
        else:
            yield target, names, node.lineno


def check_layers(sources: dict[str, tuple[bool, str]]) -> list[str]:
    """Every breach of the layering in ``{module: (is_package, source)}``; module names
    are relative to the experiments package ("" is the package itself)."""
    modules = set(sources)
    problems, edges = [], {m: set() for m in modules}
    for module, (is_package, source) in sorted(sources.items()):
        for target, names, line in _imports(module, is_package, source, modules):
            if target not in modules:
                continue  # the library or a module outside this package
            edges[module].add(target)
            if module and target and _layer(target) > _layer(module):
                problems.append(f"{module}:{line} imports {target}, a layer above it")
            if target != module:
                for name in names:
                    if name.startswith("_") and not name.endswith("__"):
                        problems.append(f"{module}:{line} uses private name {name} of "
                                        f"{target}")
    # Circles: strongly connected components of more than one module (Tarjan).
    index, low, stack, on, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                problems.append("import circle: " + " -> ".join(sorted(component)))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return problems


def _package_sources(root: Path) -> dict[str, tuple[bool, str]]:
    return {_module_name(p, root): (p.name == "__init__.py", p.read_text())
            for p in sorted(root.rglob("*.py"))}


def test_the_experiments_package_keeps_its_layers():
    sources = _package_sources(ROOT)
    assert {"config", "engine.loop", "tasks.base", "options"} <= set(sources)
    assert check_layers(sources) == []


def test_the_checker_finds_an_upward_import_a_circle_and_a_private_name():
    sources = {
        "": (True, "from .config import x\n"),
        "options": (False, "X = 1\n"),
        "config": (False, "from .options import X\n"),
        "tasks": (True, "from . import a\n"),
        "tasks.a": (False, "from . import REG\n"),  # the package imports it: a circle
        "engine": (True, "def f():\n    from ..reports.x import _y\n"),
        "reports": (True, ""),
        "reports.x": (False, "_y = 1\n"),
        "data": (True, "def g():\n    from ..config import X\n"),  # upward, inside f
    }
    problems = check_layers(sources)
    assert "engine:2 uses private name _y of reports.x" in problems
    assert "engine:2 imports reports.x, a layer above it" in problems
    assert "data:2 imports config, a layer above it" in problems
    assert "import circle: tasks -> tasks.a" in problems
    assert len(problems) == 4
    with pytest.raises(AssertionError, match="in no layer"):
        check_layers({"nowhere": (False, "from .config import X\n"),
                      "config": (False, "")})


def test_the_library_never_imports_the_experiments():
    library = ROOT.parent
    for path in library.rglob("*.py"):
        if ROOT in path.parents or path.name == "__main__.py":  # the console entry point
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                name = ("." * node.level) + (node.module or "")
                assert "experiments" not in name, f"{path}:{node.lineno} imports {name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("torchstn.experiments"), path
