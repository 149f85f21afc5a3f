"""The PPO CartPole example (what ``nox -s demo`` runs) works end to end on a small budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_demo(
    aim_repo: Path, cwd: Path, timesteps: str, eval_freq: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``nox -s demo``'s script on a small budget, storing into ``aim_repo``; it must succeed."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo.py"),
            "--timesteps",
            timesteps,
            "--eval-freq",
            eval_freq,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "ML_STORAGE_PATH": str(aim_repo), **env},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_demo_trains_twice_and_prints_the_comparison_and_the_ui_command(
    aim_repo: Path, tmp_path: Path
) -> None:
    out = _run_demo(aim_repo, tmp_path, "2048", "1024").stdout
    assert "learning_rate: ppo-lr-0.0003=0.0003, ppo-lr-0.001=0.001" in out
    assert "eval/best_mean_reward" in out
    assert "best run: ppo-lr-" in out
    assert f"aim up --repo {aim_repo}" in out
    # models go next to the store: <storage>/../models/lr-<rate>/
    assert (aim_repo.parent / "models" / "lr-0.001" / "best_model.zip").is_file()


def test_the_demo_prints_ui_commands_that_work_from_a_shell_without_its_environment(
    aim_repo: Path, tmp_path: Path
) -> None:
    # nox -s demo installs into .nox/demo, which is not on the user's PATH.
    env = {"PATH": "/usr/bin:/bin"}
    done = _run_demo(aim_repo, tmp_path, "256", "128", **env)
    lines = done.stdout.splitlines()
    aim_line = next(line for line in lines if line.strip().endswith(f"up --repo {aim_repo}"))
    aim = Path(aim_line.split()[0])
    assert aim.is_absolute() and os.access(aim, os.X_OK), aim_line
    mltrack_cmd = Path(next(line for line in lines if " ui)" in line).split()[-2])
    assert mltrack_cmd.is_absolute() and os.access(mltrack_cmd, os.X_OK)
    activate = Path(sys.executable).parent / "activate"
    assert f"source {activate}" in done.stdout
    help_out = subprocess.run([str(mltrack_cmd), "--help"], capture_output=True, text=True, env=env)
    assert help_out.returncode == 0 and "ls" in help_out.stdout


@pytest.mark.slow
def test_the_full_demo_finishes_well_within_three_minutes(aim_repo: Path, tmp_path: Path) -> None:
    import time

    env = {**os.environ, "ML_STORAGE_PATH": str(aim_repo)}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], check=True, cwd=tmp_path, env=env)
    assert time.perf_counter() - started < 180
