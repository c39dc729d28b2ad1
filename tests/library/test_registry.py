"""One Registry type for every registry; every registered name written out in the source;
the library imports nothing of the experiments."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import torchstn as ts
from torchstn._registry import Registry
from torchstn.experiments.data.distortions import DISTORTIONS
from torchstn.experiments.engine import OPTIMIZERS, SCHEDULES
from torchstn.experiments.models import MODELS
from torchstn.experiments.tasks import TASKS
from torchstn.transforms import _TRANSFORMS
from torchstn.warping import BACKENDS

PACKAGE = Path(ts.__file__).resolve().parent
REGISTRIES = {"transform": _TRANSFORMS, "backend": BACKENDS, "model": MODELS,
              "distortion": DISTORTIONS, "task": TASKS, "optimizer": OPTIMIZERS,
              "schedule": SCHEDULES}


# How each registry's entries are registered in the source: the receiver of the
# `.add("name", ...)` / `.register("name")` calls, or the function that registers.
REGISTRARS = {"transform": "register_transform", "model": "MODELS",
              "distortion": "DISTORTIONS", "task": "TASKS", "optimizer": "OPTIMIZERS",
              "schedule": "SCHEDULES", "backend": "BACKENDS"}


def _registered_literals() -> dict[str, set[str]]:
    """Per registry, the names given as string literals where it registers them; backends
    register under their class's ``name = "..."``, so Backend subclasses count too."""
    found: dict[str, set[str]] = {kind: set() for kind in REGISTRARS}
    by_registrar = {v: k for k, v in REGISTRARS.items()}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                func, first = node.func, node.args[0]
                if isinstance(func, ast.Attribute) and func.attr in ("add", "register"):
                    registrar = getattr(func.value, "id", None)
                else:
                    registrar = getattr(func, "id", None)
                kind = by_registrar.get(registrar)
                if kind and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found[kind].add(first.value)
            elif isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", "").endswith("Backend") for b in node.bases):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                            and getattr(stmt.targets[0], "id", None) == "name"
                            and isinstance(stmt.value, ast.Constant)):
                        found["backend"].add(stmt.value.value)
    return found


LITERALS = _registered_literals()


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registry_is_a_registry_with_literal_names(kind):
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry) and registry.kind == kind and len(registry) > 0
    for name in registry:
        # grep finds it: written out where it is registered, not built in a loop.
        assert name in LITERALS[kind], f"{kind} {name!r} is not registered under a literal name"
    with pytest.raises(ValueError, match=f"{kind} must be one of {registry.names()!r}".replace(
            "[", r"\[").replace("]", r"\]") + ", got 'no-such-name'"):
        registry.get("no-such-name")


def test_a_name_built_in_a_loop_is_not_a_registered_literal():
    """The check above can fail: a name put together at run time is not found."""
    built = "-".join(["st", "cnn", "hexagonal"])
    MODELS.add(built, lambda *a, **k: None)
    try:
        assert built in MODELS and built not in LITERALS["model"]
    finally:
        MODELS._entries.pop(built)


def test_registry_order_duplicates_and_options():
    r = Registry("colour")
    r.add("red", lambda: 1)
    r.add("blue", lambda shade=0: shade)
    r.add("green", lambda: 3, before="blue")
    assert r.names() == ["red", "green", "blue"] and list(r) == r.names()
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        r.add("red", None)
    with pytest.raises(ValueError, match=r"colour must be one of \['red', 'green', 'blue'\], "
                                         "got 'pink'"):
        r.add("pink", None, before="pink")
    assert r.create("blue", shade=4) == 4
    with pytest.raises(TypeError, match=r"colour 'red' does not take options \['shade'\]"):
        r.create("red", shade=1)
    assert "red" in r and 3 not in r


def test_backends_keep_their_order():
    assert BACKENDS.names() == ["numba", "triton", "torch"] == ts.list_backends()


_PROBE = """
import sys
import torch
before = set(sys.modules)
import torchstn
import torchstn.ops
x = torch.rand(1, 1, 8, 8)
torchstn.warp(x, torch.zeros(1, 2), "translation", backend="torch")
new = set(sys.modules) - before
print(" ".join(sorted(m for m in new if m.split(".")[0] in (
    "matplotlib", "safetensors", "tqdm", "tomli_w", "tomli", "numba", "triton")
    or m.startswith("torchstn.experiments"))))
"""


def test_import_torchstn_loads_no_experiment_and_no_compiler():
    """A fresh process: the library alone loads neither the experiments and their
    dependencies nor a kernel compiler (Numba and Triton load on the first fused warp)."""
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""


def test_the_library_never_imports_the_experiments():
    for path in PACKAGE.rglob("*.py"):
        if "experiments" in path.parts or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert "experiments" not in module, f"{path}: imports {module}"
            elif isinstance(node, ast.Import):
                assert not any("experiments" in a.name for a in node.names), path
