"""Child interpreters for tests: a fresh process (fresh caches, a real crash, a fresh reader)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any


def child_env(extra: dict[str, str] | None = None, *, clean: bool = False) -> dict[str, str]:
    """This process's environment (``clean``: without mltrack's own settings), plus ``extra``."""
    env = dict(os.environ)
    if clean:
        env = {k: v for k, v in env.items() if not k.startswith(("ML_", "MLTRACK_", "AIM_REPO"))}
    env.update(extra or {})
    return env


def run_python(
    code: str, *, timeout: float = 300, env: dict[str, str] | None = None, clean: bool = False
) -> Any:
    """Run ``code`` in a new interpreter; return what it printed last, parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(env, clean=clean),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def popen_python(
    code: str, *, env: dict[str, str] | None = None, clean: bool = False
) -> subprocess.Popen[str]:
    """Start ``code`` in a new interpreter, stdout and stderr piped as line-buffered text."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=child_env(env, clean=clean),
    )
