"""Fixtures for the seed README's examples: one fresh store per test, for each backend."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

# MLflow reports usage over the network when imported unless told not to; test modules import it
# while they are collected, before any fixture runs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BACKENDS = ("memory", "aim", "mlflow")


@pytest.fixture(scope="session")
def seed_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database, created once (MLflow's migrations take seconds)."""
    from mltrack_mlflow.backend import sqlalchemy_store_class

    root = tmp_path_factory.mktemp("seed-mlflow-template")
    sqlalchemy_store_class()(
        f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
    ).engine.dispose()
    return root / "mlflow.db"


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
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLTRACK_MLFLOW_BATCH"):
        monkeypatch.delenv(var, raising=False)
    import mltrack

    if name == "memory":
        mltrack.configure_backend("memory", store=str(tmp_path))
    elif name == "aim":
        from mltrack_aim import configure_aim_backend

        aim_repo = request.getfixturevalue("aim_repo")
        configure_aim_backend(repo_path=str(aim_repo), experiment_name="AgenticTrading")
    else:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        store = tmp_path / "mlflow_logs"
        store.mkdir()
        # The same empty database MLflow would create, copied: its migrations take seconds.
        shutil.copyfile(request.getfixturevalue("seed_mlflow_db"), store / "mlflow.db")
        monkeypatch.setenv("ML_TRACKING_BACKEND", "mlflow")
    return name
