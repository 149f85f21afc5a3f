"""mltrack-mlflow: the MLflow backend of mltrack (local SQLite stores and MLflow servers).

``import mltrack_mlflow`` does not import mlflow; the backend does, when it is selected.
"""

from __future__ import annotations

from mltrack_mlflow.processes import MlflowProcess, start_mlflow_server, start_mlflow_ui
from mltrack_mlflow.settings import MlflowSettings, configure_mlflow_backend

__version__ = "0.1.0"

__all__ = [
    "MlflowProcess",
    "MlflowSettings",
    "configure_mlflow_backend",
    "start_mlflow_server",
    "start_mlflow_ui",
]
