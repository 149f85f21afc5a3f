"""Running the installed ``mltrack`` command against a repository, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MLTRACK = str(Path(sys.executable).parent / "mltrack")


def run_cli(repo: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mltrack`` command against an Aim repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLTRACK_", "AIM_"))}
    env.update(ML_TRACKING_BACKEND="aim", AIM_REPO_PATH=str(repo), COLUMNS="160")
    return subprocess.run([MLTRACK, *args], capture_output=True, text=True, env=env, input=input, timeout=300)
