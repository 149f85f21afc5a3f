"""Running the installed ``mltrack`` command against a repository, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _child import env_without

MLTRACK = str(Path(sys.executable).parent / "mltrack")


def run_mltrack(*args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mltrack`` command with no mltrack, Aim or MLflow settings but ``env``.

    Output is 160 columns wide unless ``COLUMNS`` says otherwise (``COLUMNS=""``: not set at all).
    """
    full_env = env_without(("ML_", "MLTRACK_", "AIM_", "MLFLOW_"))
    full_env.update(COLUMNS="160", MLFLOW_DISABLE_TELEMETRY="true")
    full_env.update(env)
    full_env = {k: v for k, v in full_env.items() if v != ""}
    return subprocess.run(
        [MLTRACK, *args], capture_output=True, text=True, env=full_env, input=input, timeout=300
    )


def run_cli(repo: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mltrack`` command against an Aim repository."""
    return run_mltrack(*args, input=input, ML_TRACKING_BACKEND="aim", AIM_REPO_PATH=str(repo))
