"""docs/plugins/hooks.md documents every hook of mltrack.hookspecs, as the hookspec declares it.

Each hook has a section headed ``### `mltrack_...` `` holding its signature as a Python
``def`` in a code block and a ``- **firstresult:** yes|no`` line; this test fails naming the
hook whose section is missing or disagrees (parameter names, firstresult), and any section
naming a hook that does not exist.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from mltrack import hookspecs

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "plugins" / "hooks.md"
HOOKS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if name.startswith("mltrack_") and getattr(fn, f"{hookspecs.PROJECT}_spec", None) is not None
)


def _sections() -> dict[str, str]:
    """Each ``### `mltrack_...` `` section of the reference, by hook name."""
    parts = re.split(r"^### `(mltrack_\w+)`\s*$", REFERENCE.read_text(), flags=re.MULTILINE)
    return {name: body.split("\n## ", 1)[0] for name, body in zip(parts[1::2], parts[2::2])}


SECTIONS = _sections()


def test_the_hookspecs_are_found() -> None:
    assert "mltrack_create_run" in HOOKS and "mltrack_register_backends" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_matching_its_hookspec(hook: str) -> None:
    section = SECTIONS.get(hook)
    assert section is not None, (
        f"docs/plugins/hooks.md has no section '### `{hook}`': document the hook there"
    )
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code is not None, f"{hook}: its section shows no signature (a ```python block with its def)"
    (documented,) = ast.parse(code.group(1)).body
    assert isinstance(documented, ast.FunctionDef) and documented.name == hook, (
        f"{hook}: the block defines another name"
    )
    spec = getattr(hookspecs, hook)
    params = list(inspect.signature(spec).parameters)
    assert [a.arg for a in documented.args.args] == params, (
        f"{hook}: the documented parameters are not {params}"
    )
    stated = re.search(r"^- \*\*firstresult:\*\* (yes|no)\b", section, flags=re.MULTILINE)
    assert stated is not None, f"{hook}: its section has no '- **firstresult:** yes|no' line"
    firstresult = getattr(spec, f"{hookspecs.PROJECT}_spec")["firstresult"]
    assert (stated.group(1) == "yes") is firstresult, f"{hook}: firstresult is {firstresult} in the hookspec"
    assert re.search(r"^- \*\*Asked:\*\* \S", section, flags=re.MULTILINE), (
        f"{hook}: who is asked is not said"
    )


def test_every_section_names_a_hook_that_exists() -> None:
    assert sorted(set(SECTIONS) - set(HOOKS)) == []
