"""Fixtures for the MLflow backend tests: real SQLite stores on disk, real MLflow servers on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack_mlflow import MlflowProcess, start_mlflow_server
from mltrack_mlflow.settings import DB_NAME, sqlite_uri

# MLflow reports usage over the network when imported unless told not to; test modules import it
# while they are collected, before any fixture runs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _no_mlflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own settings from the environment must not redirect these tests."""
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_RUN_ID",
        "MLTRACK_MLFLOW_BATCH",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database, created once (MLflow's migrations take seconds)."""
    from mltrack_mlflow.backend import sqlalchemy_store_class

    root = tmp_path_factory.mktemp("mlflow-template")
    sqlalchemy_store_class()(sqlite_uri(root), (root / "artifacts").as_uri()).engine.dispose()
    return root / DB_NAME


@pytest.fixture
def mlflow_dir(tmp_path: Path, mlflow_db_template: Path) -> Path:
    """A folder of this test's own holding an empty ``mlflow.db``."""
    root = tmp_path / "mlflow_logs"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / DB_NAME)
    return root


@pytest.fixture(scope="module")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path
) -> Iterator[MlflowProcess]:
    """A real ``mlflow server`` on 127.0.0.1 (free port), stopped by process group afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(mlflow_db_template, root / DB_NAME)  # spares the server MLflow's migrations
    server = start_mlflow_server(root)
    yield server
    server.stop()
    assert not server.is_running()
    assert not server.group_alive()
