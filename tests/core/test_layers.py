"""The layers of mltrack: each module imports only what lies below it, and no two import each other.

Bottom to top: errors, settings, models -> config, writer, hookspecs, plugins -> tracker,
repository, copying -> factory -> cli. Two checks: what importing a module really loads, in a
fresh interpreter, and every import statement in the source (function-level and type-only
imports too: a cycle hidden in a function is a cycle all the same).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mltrack

SRC = Path(mltrack.__file__).parent
BOTTOM = {"mltrack.errors", "mltrack.settings", "mltrack.models"}
"""Plain values, errors and the settings table: they import nothing of mltrack above them."""
ABOVE_TRACKER = ("mltrack.factory", "mltrack.cli", "mltrack.testing", "mltrack.__main__")
"""The modules that may import the tracker; the package itself re-exports it lazily."""


def _modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages([str(SRC)], prefix="mltrack.")]
    return sorted(m for m in found if m != "mltrack.__main__")  # running it runs the CLI


def _source(module: str) -> Path:
    path = SRC.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _named(node: ast.stmt, module: str) -> set[str]:
    """The mltrack modules one import statement in ``module`` names (a package's names as its submodules)."""
    known = set(_modules())
    if isinstance(node, ast.Import):
        names = {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the package of ``module``, up level - 1 packages
            parts = (
                module.split(".")[: -node.level]
                if _source(module).name != "__init__.py"
                else module.split(".")
            )
            base = ".".join([*parts, *([node.module] if node.module else [])])
        names = set()
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.add(sub if sub in known else base)
    else:
        return set()
    return {n for n in names if n in known and n != module}


def _imports(module: str) -> set[str]:
    """Every mltrack module named by an import statement anywhere in ``module``'s source."""
    tree = ast.parse(_source(module).read_text())
    return {n for node in ast.walk(tree) if isinstance(node, ast.stmt) for n in _named(node, module)}


def _loaded_by(module: str) -> set[str]:
    """The mltrack modules that ``import module`` loads in a fresh interpreter."""
    code = (
        f"import sys, json; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'mltrack' or m.startswith('mltrack.'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1])) - {"mltrack", module}


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_the_bottom_layer_loads_nothing_above_it(module: str) -> None:
    assert _loaded_by(module) <= BOTTOM
    assert _imports(module) <= BOTTOM


@pytest.mark.parametrize("module", [m for m in _modules() if not m.startswith(ABOVE_TRACKER)])
def test_no_module_below_the_tracker_imports_it(module: str) -> None:
    if module == "mltrack.tracker":
        pytest.skip("the tracker itself")
    assert "mltrack.tracker" not in _loaded_by(module)
    assert "mltrack.tracker" not in _imports(module)


def test_final_metric_key_lives_in_models_and_stays_importable_from_the_tracker() -> None:
    from mltrack import models, tracker

    assert tracker.final_metric_key is models.final_metric_key
    assert models.final_metric_key("loss", (("subset", "val"),)) == "loss{subset=val}"


def test_config_does_not_import_the_factory() -> None:
    assert "mltrack.factory" not in _imports("mltrack.config")
    assert "mltrack.factory" not in _loaded_by("mltrack.config")


def test_repository_and_copying_do_not_import_each_other() -> None:
    both = ("mltrack.repository" in _imports("mltrack.copying")) and (
        "mltrack.copying" in _imports("mltrack.repository")
    )
    assert not both
    assert "mltrack.repository" not in _loaded_by("mltrack.copying")


def test_the_module_level_imports_form_no_cycle() -> None:
    """Imports run at import time (not in functions, not for type checking) never loop back."""

    def module_level(module: str) -> set[str]:
        # Module level only: imports in functions and `if TYPE_CHECKING:` blocks are left out.
        tree = ast.parse(_source(module).read_text())
        return {n for node in tree.body for n in _named(node, module)}

    graph = {m: module_level(m) for m in _modules()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting, module])
        visiting.append(module)
        for dep in graph.get(module, ()):
            # A package's __init__ importing its own submodules is how packages are built.
            if not dep.startswith(module + "."):
                visit(dep)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)
