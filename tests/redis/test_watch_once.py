"""``mltrack watch --once``: the table once, for scripts; filtered by experiment; a clear error without Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mltrack

MLTRACK = str(Path(sys.executable).with_name("mltrack"))


def _watch(*args: str, url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLTRACK_REDIS_URL", "LINES")}
    env["COLUMNS"] = "200"
    if url is not None:
        env["MLTRACK_REDIS_URL"] = url
    return subprocess.run(
        [MLTRACK, "watch", "--once", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_watch_once_lists_the_runs_of_an_experiment(
    tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_REDIS_URL", redis_server.url)
    mltrack.configure_backend("memory", store=str(tmp_path))
    with mltrack.start_run("shown", name="kept") as run:
        run.log_metrics({"loss": 0.5}, step=1)
        run.progress(30, 40)
        run.set_state(phase="eval", seed=7)
    with mltrack.start_run("hidden", name="other"):
        pass

    out = _watch("--experiment", "shown", url=redis_server.url)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "kept (" in line)
    assert "completed" in row and "75%" in row and "30/40" in row and "eval" in row and "seed=7" in row
    assert f"kept ({run.id[:8]})" in row
    assert "other" not in out.stdout
    everything = _watch(url=redis_server.url)
    assert "kept (" in everything.stdout and "other (" in everything.stdout


def test_watch_without_a_redis_says_how_to_set_one() -> None:
    out = _watch(url=None)
    assert out.returncode != 0
    assert "set MLTRACK_REDIS_URL" in out.stderr + out.stdout
