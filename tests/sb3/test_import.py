"""Importing the integration is cheap and pulls in no store."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_mltrack_sb3_imports_no_backend() -> None:
    code = (
        "import sys, mltrack_sb3\n"
        "mltrack_sb3.TrackingCallback, mltrack_sb3.MLTrackOutputFormat\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aim', 'mltrack_aim')))"
    )
    assert _run(code) == "[]"


def test_importing_the_package_alone_does_not_import_stable_baselines3() -> None:
    # mltrack imports every plugin module when it loads plugins; that must stay cheap.
    code = "import sys, mltrack_sb3.plugin\nprint('stable_baselines3' in sys.modules, 'torch' in sys.modules)"
    assert _run(code) == "False False"


def test_the_plugin_shows_in_mltrack_backends() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mltrack", "backends"], capture_output=True, text=True, check=True
    ).stdout
    assert "sb3" in out
