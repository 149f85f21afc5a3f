"""Fixtures for the MLflow backend tests: real SQLite stores on disk, real MLflow servers on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack_mlflow import MlflowProcess, start_mlflow_server
from mltrack_mlflow.settings import DB_NAME


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
