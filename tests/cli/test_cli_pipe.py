"""``mltrack show X | head -1``: a reader that stops early ends mltrack quietly, as other Unix tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from _child import env_without
from _cli_helpers import MLTRACK


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An Aim repository with one run whose ``show`` prints far more than a pipe buffers (64 KB)."""
    import mltrack
    from mltrack import factory

    repo = tmp_path_factory.mktemp("pipe") / "aim_logs"
    mltrack.configure_backend("aim", repo_path=str(repo))
    try:
        config = {f"param_{i:05d}": "x" * 40 for i in range(3000)}
        with mltrack.start_run("wide", config) as run:
            run.log_metric("loss", 1.0, step=0)
    finally:
        factory.reset()
        mltrack.reset_configuration()
    return repo, run.id


def _env(repo: Path) -> dict[str, str]:
    env = env_without(("ML_", "MLTRACK_", "AIM_", "MLFLOW_"))
    return {**env, "ML_TRACKING_BACKEND": "aim", "AIM_REPO_PATH": str(repo)}


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["table", "json"])
def test_show_into_a_pipe_closed_after_one_line_exits_0_and_says_nothing(
    big_run: tuple[Path, str], json_flag: tuple[str, ...]
) -> None:
    repo, run_id = big_run
    proc = subprocess.Popen(
        [MLTRACK, "show", run_id, *json_flag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(repo),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # what `head -1` does: one line, then close the pipe
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert first.strip()
    assert stderr == ""


def test_show_through_a_shell_pipe_into_head_exits_0(big_run: tuple[Path, str]) -> None:
    repo, run_id = big_run
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{MLTRACK} show {run_id} | head -1"],
        capture_output=True,
        text=True,
        env=_env(repo),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""
