"""Fixtures for the seed README's examples: one fresh store per test, for each backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BACKENDS = ("memory", "aim", "mlflow")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Configure the process-wide API for a fresh store of backend ``request.param``.

    The working directory is the test's tmp dir. ``memory`` and ``aim`` are configured in code
    as the seed README shows; ``mlflow`` only by ``ML_TRACKING_BACKEND=mlflow`` (its default
    store, ``./mlflow_logs``, then lands in the tmp dir).
    """
    name: str = request.param
    if name != "memory" and importlib.util.find_spec(f"mltrack_{name}") is None:
        pytest.skip(f"mltrack-{name} is not installed")
    monkeypatch.chdir(tmp_path)
    import mltrack

    if name == "memory":
        mltrack.configure_backend("memory", store=str(tmp_path))
    elif name == "aim":
        from mltrack_aim import configure_aim_backend

        aim_repo = request.getfixturevalue("aim_repo")
        configure_aim_backend(repo_path=str(aim_repo), experiment_name="AgenticTrading")
    else:
        # Its default store, ./mlflow_logs, holding a copy of an empty database (migrations take seconds).
        request.getfixturevalue("mlflow_dir")
        monkeypatch.setenv("ML_TRACKING_BACKEND", "mlflow")
    return name
