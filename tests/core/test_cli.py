"""The ``mltrack`` command, run through its installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _child import env_without

MLTRACK = str(Path(sys.executable).parent / "mltrack")


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = env_without(("ML_", "MLTRACK_"))
    full_env.update(env)
    return subprocess.run([MLTRACK, *args], capture_output=True, text=True, env=full_env)


def test_backends_lists_the_memory_backend_of_core() -> None:
    proc = run_cli("backends")
    assert proc.returncode == 0, proc.stderr
    assert "memory  [mltrack-core 0.1.0]" in proc.stdout
    assert "backends: memory" in proc.stdout
    assert "hooks:    mltrack_register_backends" in proc.stdout


def test_health_is_ok_on_memory_and_prints_json() -> None:
    proc = run_cli("health", "--json", ML_TRACKING_BACKEND="memory")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["is_healthy"] is True
    assert data["backend"] == "memory"


def test_health_fails_with_exit_code_1_and_the_fix_when_no_backend() -> None:
    proc = run_cli("health", MLTRACK_LOAD_PLUGINS="")
    assert proc.returncode == 1
    assert "UNHEALTHY" in proc.stdout
    assert "No tracking backend configured: install one (pip install mltrack-aim)" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


def test_python_dash_m_mltrack_works_too() -> None:
    proc = subprocess.run([sys.executable, "-m", "mltrack", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "backends" in proc.stdout
    assert "health" in proc.stdout
