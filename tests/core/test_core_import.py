"""import mltrack stays cheap and never pulls in a backend or integration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CORE_SRC = Path(__file__).parents[2] / "packages" / "mltrack-core" / "src"
STORES = ("aim", "mlflow", "stable_baselines3", "torch")
FORBIDDEN = ("aim", "mltrack_aim", "mltrack_sb3", "mltrack_mlflow", "stable_baselines3", "mlflow", "torch")


def test_import_mltrack_takes_under_100_ms() -> None:
    best = min(_import_time_us() for _ in range(3))
    assert best < 100_000, f"import mltrack took {best / 1000:.1f} ms"


def _import_time_us() -> int:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mltrack"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    (line,) = [ln for ln in out.splitlines() if ln.rstrip().endswith("| mltrack")]
    return int(line.split("|")[1])


def test_core_source_never_imports_a_backend_or_integration() -> None:
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(FORBIDDEN)})\b", re.MULTILINE)
    offenders = [str(p) for p in CORE_SRC.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_using_the_api_on_memory_loads_no_backend_module() -> None:
    code = (
        "import sys, mltrack\n"
        "mltrack.configure_backend('memory')\n"
        "with mltrack.start_run('x') as run: run.log_metric('m', 1.0)\n"
        f"print([m for m in {STORES!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
